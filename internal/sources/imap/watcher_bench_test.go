package imap

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// BenchmarkWatcherMemory watches 1,000 idle users against the in-process
// go-imap server and reports the memory the watcher holds per user once
// every user IDLEs:
//
//   - client-B/user: the watcher's heap (its client, connection, TLS,
//     buffers, state) plus its share of the goroutine stacks;
//   - client-heap-B/user and client-goroutines/user: the same, apart;
//   - heap-B/user, stack-B/user and goroutines/user: the whole process,
//     the in-process server's side included.
//
// The heap is told apart by the allocating stack (every allocation is
// sampled): the server's goroutines run the go-imap server, its backend
// and listener. Run it with -benchtime=1x.
func BenchmarkWatcherMemory(b *testing.B) {
	const users = 1000
	for _, mode := range []TLSMode{TLSNone, TLSImplicit} {
		b.Run(string(mode), func(b *testing.B) {
			for range b.N {
				measureWatcher(b, mode, users)
			}
		})
	}
}

// memory is the process's memory at one time, the heap split by side.
type memory struct {
	clientHeap, serverHeap int64
	stack                  uint64
	heap                   uint64
	clientGoroutines       int
	goroutines             int
}

func measureWatcher(b *testing.B, mode TLSMode, users int) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	be := newIdleBackend()
	boxes := make([]sources.Mailbox, users)
	for i := range boxes {
		boxes[i] = sources.Mailbox{Tenant: "example.com", User: fmt.Sprintf("user%d@example.com", i)}
		be.addUser(boxes[i].User, "pw", 5, 2)
	}
	server := startIdleServer(b, be, mode, true)
	before := measure()
	var published atomic.Int64
	w, err := NewWatcher(WatchConfig{
		Server: server, Users: boxes, LoginsPerSecond: 500,
		Publish: func(_ context.Context, evs []events.Event) error {
			published.Add(int64(len(evs)))
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for _, box := range boxes {
		be.waitIdle(b, box.User)
	}
	for published.Load() < int64(users) {
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	after := measure()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	n := float64(users)
	goroutines := float64(after.goroutines - before.goroutines)
	clientGoroutines := float64(after.clientGoroutines - before.clientGoroutines)
	stack := float64(after.stack - before.stack)
	clientHeap := float64(after.clientHeap - before.clientHeap)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric((clientHeap+stack*clientGoroutines/goroutines)/n, "client-B/user")
	b.ReportMetric(clientHeap/n, "client-heap-B/user")
	b.ReportMetric(clientGoroutines/n, "client-goroutines/user")
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap-B/user")
	b.ReportMetric(stack/n, "stack-B/user")
	b.ReportMetric(goroutines/n, "goroutines/user")
}

// measure collects the garbage and reads the process's memory.
func measure() memory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memory{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	m.clientHeap, m.serverHeap = heapBySide()
	m.clientGoroutines = clientGoroutines()
	return m
}

// heapBySide splits the heap in use between the server's side and the
// rest, by the stacks that allocated it.
func heapBySide() (client, server int64) {
	n, _ := runtime.MemProfile(nil, false)
	var recs []runtime.MemProfileRecord
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	for _, r := range recs {
		if serverStack(r.Stack()) {
			server += r.InUseBytes()
		} else {
			client += r.InUseBytes()
		}
	}
	return client, server
}

// serverStack tells whether an allocation's stack is the server's.
func serverStack(pcs []uintptr) bool {
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if serverFunction(f.Function) {
			return true
		}
		if !more {
			return false
		}
	}
}

// serverFunction tells whether a function runs on the server's side.
func serverFunction(name string) bool {
	for _, s := range []string{
		"go-imap/server.", "go-imap/backend", "net.(*TCPListener)", "crypto/tls.(*listener)", "crypto/tls.(*Conn).serverHandshake",
		"imap.(*idleBackend)", "imap.(*idleSession)", "imap.(*idleMailbox)", "imap.(*idleConn)", "imap.(*idleExt)",
		"imap.(*examineCmd)", "imap.(*searchCmd)", "imap.(*logoutCmd)", "imap.startServer",
	} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// clientGoroutines counts the goroutines that are not the server's.
func clientGoroutines() int {
	buf := make([]byte, 64<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "go-imap/server.") {
			n++
		}
	}
	return n
}
