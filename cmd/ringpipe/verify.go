package main

import "fmt"

// verify is `ringpipe verify DIR`: every damage as "file: offset N: what",
// warnings (what recovery repairs by itself: torn tails, leftovers) marked
// as such, a summary, and exit status 1 if anything is damaged.
func (a *app) verify(s *survey) int {
	fs, files := s.findings()
	damaged, warnings := 0, 0
	for _, f := range fs {
		fmt.Fprintln(a.stdout, f)
		if f.warning {
			warnings++
		} else {
			damaged++
		}
	}
	verdict := "no damage"
	if damaged > 0 {
		verdict = fmt.Sprintf("%d %s", damaged, plural(damaged, "damage", "damages"))
	}
	fmt.Fprintf(a.stdout, "verify %s: %d files checked, %s, %d %s\n", s.dir, files, verdict,
		warnings, plural(warnings, "warning", "warnings"))
	if damaged > 0 {
		return exitFail
	}
	return exitOK
}
