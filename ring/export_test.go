package ring

// ReapsViaPoller reports whether r is the io_uring backend with its reaper
// parked in Go's poller (see cqWaiter).
func ReapsViaPoller(r Ring) bool {
	u, ok := r.(*uringRing)
	return ok && u.waiter != nil
}
