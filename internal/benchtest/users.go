package benchtest

import (
	"fmt"
	"strconv"
	"strings"
)

// DeviceToken is the device token the benchmarks give user number u's one
// device: u in 64 hexadecimal digits, an APNs token's length. The raw
// chains (test/pipelinebench) derive it from the user's name with
// UserNumber, reading no subscription.
func DeviceToken(u int) string { return fmt.Sprintf("%064x", u) }

// UserNumber is the number a benchmark user's name ends with before its
// domain ("u42@example.com" and "user42@fabrikam.com" are both 42), and
// false for a name without one.
func UserNumber(user string) (int, bool) {
	local, _, _ := strings.Cut(user, "@")
	digits := strings.TrimLeft(local, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	u, err := strconv.Atoi(digits)
	return u, err == nil
}
