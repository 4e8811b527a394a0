//go:build !unix

package broker

import "os"

// flock does nothing where advisory locks are not available.
func flock(*os.File) error { return nil }

// funlock does nothing where advisory locks are not available.
func funlock(*os.File) error { return nil }
