package main

import (
	"os"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"ingest, batches of 100 (vs raw publish)":                 "12568 ev/s|21947 ev/s|57%|below",
		"ingest, batches of 100 (vs bare handler)":                "12568 ev/s|14263 ev/s|88%|below",
		"ingest, one event per request":                           "3589 ev/s|3738 ev/s|96%|PASS",
		"ingest, batches of 100, CPU per event (vs raw publish)":  "16.0 µs|9.6 µs|60%|below",
		"ingest, batches of 100, CPU per event (vs bare handler)": "16.0 µs|12.8 µs|80%|below",
		"ingest, one event per request, CPU per event":            "70.0 µs|63.0 µs|90%|PASS",
		"dispatcher, rate":                                        "11200 ev/s|12727 ev/s|88%|below",
		"dispatcher, CPU per event":                               "21.3 µs|15.4 µs|72%|below",
		"event-to-push, 300 ms window":                            "p99 308.0 ms|window + 50 = 350 ms|114%|PASS",
		"event-to-push, 20 ms window":                             "p99 80.0 ms|window + 50 = 70 ms|88%|below",
		"relay, rate":                                             "-|-|-|not run",
		"whole pipeline, one event per request, rate":             "3848 ev/s|5999 ev/s|64%|PASS",
		"whole pipeline, one event per request, CPU":              "368.0 µs|205.0 µs|56%|PASS",
		"whole pipeline, batches of 100, rate":                    "-|-|-|not run",
		"whole pipeline, one event per request, highest rate at p99 ≤ window + 50 ms (vs the raw chain's highest)": "5000 ev/s|10000 ev/s|50%|below",
		"whole pipeline, batches of 100, highest rate at p99 ≤ window + 50 ms (vs the raw chain's highest)":        "-|-|-|not run",
	}
	for _, r := range table(res) {
		w, ok := want[r.stage]
		if !ok {
			continue
		}
		delete(want, r.stage)
		if got := strings.Join([]string{r.figure, r.anchor, r.ratio, r.result}, "|"); got != w {
			t.Errorf("%s: %s, want %s", r.stage, got, w)
		}
	}
	for stage := range want {
		t.Errorf("no row %q in the table", stage)
	}
}

// FuzzParse never panics on any input, and reads only benchmark lines.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/bench.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("BenchmarkX-2 1 NaN a 1e400 b")
	f.Fuzz(func(t *testing.T, in string) {
		res, err := parse(strings.NewReader(in))
		if err != nil {
			return
		}
		for name := range res {
			if !strings.HasPrefix(name, "Benchmark") {
				t.Fatalf("read %q as a benchmark", name)
			}
		}
		_ = table(res)
	})
}
