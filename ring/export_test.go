package ring

// ReapsViaPoller reports whether r is the io_uring backend with its reaper
// parked in Go's poller (see cqWaiter).
func ReapsViaPoller(r Ring) bool {
	u, ok := r.(*uringRing)
	return ok && u.waiter != nil
}

// SetAsyncWrites makes the io_uring backend r flag every write IOSQE_ASYNC
// (straight to a kernel worker, without the nonblocking attempt first). It
// reports whether r is that backend. REQUIRES: nothing submitted yet.
func SetAsyncWrites(r Ring, on bool) bool {
	u, ok := r.(*uringRing)
	if ok {
		u.asyncWrites = on
	}
	return ok
}
