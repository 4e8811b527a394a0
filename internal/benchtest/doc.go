// Package benchtest holds what the benchmarks of several packages share:
// the process's CPU time, so that each reports CPU per event beside its
// rate, measured the same way, each kind of round's median (Rounds), so
// that one stalled round does not decide a ratio, CPU profiles of the
// windows they measure (ProfileWindow), the saving of another process's
// Go profiles, and the device token of a benchmark user (DeviceToken),
// which the raw chains derive from the user's name (UserNumber).
package benchtest
