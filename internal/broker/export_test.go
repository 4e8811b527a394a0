package broker

// ReleaseAt releases the lease as Run does when it stops, with rev the
// last revision Run knew of.
func (l *Lease) ReleaseAt(rev uint64) { l.release(rev) }
