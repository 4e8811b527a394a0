package storage

import "time"

// RereadEvery makes s read the settings again after d instead of Refresh.
func (s *Switch) RereadEvery(d time.Duration) *Switch {
	s.every = d
	return s
}
