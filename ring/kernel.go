package ring

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// kernelRelease returns the running kernel's release string, or "unknown".
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return string(bytes.TrimRight(u.Release[:], "\x00"))
}
