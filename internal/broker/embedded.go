package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// LockFile is the file in an embedded server's store directory that its
// owner holds an exclusive lock on, with its pid inside.
const LockFile = "pushproxy.lock"

// ErrDirInUse is returned by StartEmbedded (and so Connect) when another
// process owns the store directory.
var ErrDirInUse = errors.New("the data directory is in use by another process")

// dirLock is an exclusive lock on a store directory.
type dirLock struct{ f *os.File }

// lockDir takes dir's lock without waiting, writing this process's pid into
// it; while another process holds it, it fails with ErrDirInUse and the
// holder's pid, and touches nothing else.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening the data directory's lock %s: %w", path, err)
	}
	if err := flock(f); err != nil {
		holder, _ := os.ReadFile(path)
		_ = f.Close()
		pid := strings.TrimSpace(string(holder))
		if pid == "" {
			pid = "unknown"
		}
		return nil, fmt.Errorf("%w: %s is locked by pid %s; stop that process or choose another data directory", ErrDirInUse, dir, pid)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// release gives the lock up; a nil lock does nothing.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = funlock(l.f)
	_ = l.f.Close()
	l.f = nil
}

// Embedded is a NATS server running in this process, with the lock on its
// store directory.
type Embedded struct {
	*server.Server
	lock *dirLock
}

// Shutdown stops the server, waits until it has stopped, and releases the
// store directory's lock.
func (e *Embedded) Shutdown() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
	e.lock.release()
}

// startLog is the embedded server's logger while it starts: it drops the
// chatter and hands the first fatal error to StartEmbedded, so a server
// that cannot start says why at once; errors are kept for the message.
type startLog struct {
	fatal chan string
	mu    sync.Mutex
	errs  []string
}

func newStartLog() *startLog { return &startLog{fatal: make(chan string, 1)} }

// Noticef drops a notice.
func (*startLog) Noticef(string, ...any) {}

// Warnf drops a warning.
func (*startLog) Warnf(string, ...any) {}

// Debugf drops a debug line.
func (*startLog) Debugf(string, ...any) {}

// Tracef drops a trace line.
func (*startLog) Tracef(string, ...any) {}

// Errorf keeps an error, and prints it: the embedded server has no log of
// its own.
func (l *startLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	l.errs = append(l.errs, msg)
	if len(l.errs) > 5 {
		l.errs = l.errs[1:]
	}
	l.mu.Unlock()
	fmt.Fprintln(os.Stderr, "embedded NATS: "+msg)
}

// Fatalf hands the error to StartEmbedded.
func (l *startLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	select {
	case l.fatal <- msg:
	default:
	}
	l.Errorf("%s", msg)
}

// last is the errors seen so far, for a message.
func (l *startLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return ""
	}
	return ": " + strings.Join(l.errs, "; ")
}
