package benchtest

import "testing"

func TestUserNumber(t *testing.T) {
	cases := []struct {
		user string
		want int
		ok   bool
	}{
		{"u42@example.com", 42, true},
		{"user42@fabrikam.com", 42, true},
		{"7", 7, true},
		{"u0@example.com", 0, true},
		{"alice@example.com", 0, false},
		{"u-1@example.com", 0, false},
		{"u+1@example.com", 0, false},
		{"u1x@example.com", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		got, ok := UserNumber(c.user)
		if got != c.want || ok != c.ok {
			t.Errorf("UserNumber(%q) = %d, %v; want %d, %v", c.user, got, ok, c.want, c.ok)
		}
	}
}

func TestDeviceTokenIsAnAPNsToken(t *testing.T) {
	for _, u := range []int{0, 42, 1<<31 - 1} {
		if got := DeviceToken(u); len(got) != 64 {
			t.Errorf("DeviceToken(%d) = %q: %d digits, want 64", u, got, len(got))
		}
	}
}
