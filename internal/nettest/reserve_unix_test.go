//go:build unix

package nettest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// holdEnv makes TestHoldAPort the helper of TestAReservedPortIsNobodyElses.
const holdEnv = "PUSHPROXY_NETTEST_HOLD"

// TestHoldAPort, as a helper process, chooses a port, prints it and holds
// it until its standard input closes.
func TestHoldAPort(t *testing.T) {
	if os.Getenv(holdEnv) == "" {
		t.Skip("the helper of TestAReservedPortIsNobodyElses")
	}
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("holding", ports[0])
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestAReservedPortIsNobodyElses: a port FreePorts chose is not chosen
// again, by this process or another, while the process that chose it
// lives, even with nothing listening on it; once that process ends, it is
// free again.
func TestAReservedPortIsNobodyElses(t *testing.T) {
	mine, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := reserve(mine[0]); ok {
		t.Fatalf("port %d, chosen by this process, could be reserved again", mine[0])
	}

	helper := exec.Command(os.Args[0], "-test.run=^TestHoldAPort$", "-test.count=1")
	helper.Env = append(os.Environ(), holdEnv+"=1")
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Process.Kill(); _ = helper.Wait() }()
	var theirs int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "holding "); ok {
			if theirs, err = strconv.Atoi(p); err != nil {
				t.Fatalf("the helper printed %q", sc.Text())
			}
			break
		}
	}
	if theirs == 0 {
		t.Fatal("the helper printed no port")
	}
	if _, ok := reserve(theirs); ok {
		t.Fatalf("port %d, held by another process, could be reserved", theirs)
	}
	stdin.Close()
	_, _ = io.Copy(io.Discard, stdout)
	if err := helper.Wait(); err != nil {
		t.Fatalf("the helper: %v", err)
	}
	release, ok := reserve(theirs)
	if !ok {
		t.Fatalf("port %d is still reserved after the process holding it ended", theirs)
	}
	release()
}
