// bench/go/main.go — //bench's Go worker (bench_go): issue 12's collector
// workloads in Go, the anchor for pauses. Standard library only; built
// offline by the genrule in bench/BUILD from Debian's golang-go.
//
// The same workloads as bench/gcserver_workloads.c, line for line (keep
// the two in step): the server-like workload (gcserver_256m,
// gcserver_1g), the full collection of a binary tree under GOMAXPROCS 1
// and 2 (gcserver_tree_m1/_m2, runtime.GC()), pointer stores while no
// mark runs (gcserver_write), and GCBench (gcserver_gcbench). See that file for what each measures.
//
// It speaks the workers' protocol of bench/driver.cc, so the driver runs
// it like any other worker:
//
//	bench_go --bench_list                    info and case lines (tab-separated)
//	bench_go --benchmark_filter=^BM_<w>/go(/|$) --benchmark_out=FILE [--benchmark_*]
//	                                         runs case <w>, writes its result as
//	                                         Google Benchmark JSON to FILE and
//	                                         prints it on one line: "result {...}"
//	bench_go --smoke ...                     tiny sizes (the smoke test)
//
// TP_BENCH_QUICK=1 (set by the driver's --quick) shortens and shrinks the
// cases as in C. Pacing: GOGC=100 (debug.SetGCPercent(100)), GOMAXPROCS
// as the runtime chooses (one per CPU) except in the tree cases.
//
// Pauses: runtime/metrics' /gc/pauses:seconds, a histogram of every
// stop-the-world pause (buckets of 1/16 of a power of two in Go 1.19); a
// quantile is the upper bound of its bucket (at most 6.25 % above the
// true value). Stalls: each mutator goroutine reads the monotonic clock
// (time.Since: CLOCK_MONOTONIC) every 16 operations and records every gap
// over 100 us with its start, exactly as the C mutators do.
package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// 24 bytes, as bench_gnode.
type node struct {
	l, r *node
	i, j int32
}

// 56 bytes, as bench_gentry (Go's size class: 64).
type entry struct {
	tree    *node
	key     uint64
	payload [5]uint64
}

var (
	quick = os.Getenv("TP_BENCH_QUICK") != "" && os.Getenv("TP_BENCH_QUICK") != "0"
	smoke = false
	base  = time.Now()
)

func nowNs() uint64 { return uint64(time.Since(base)) }

// xorshift64*, as bench_rand.
func rnd(s *uint64) uint64 {
	x := *s
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*s = x
	return x * 0x2545F4914F6CDD1D
}

type result struct {
	ns, ops  float64
	counters map[string]float64
	err      string
}

func newResult() *result { return &result{counters: map[string]float64{}} }

func (r *result) counter(name string, v float64) { r.counters[name] = v }

// ---- pauses: runtime/metrics ------------------------------------------------

type pauseSnap struct {
	counts []uint64
	bounds []float64
	cycles uint64
	total  uint64 // MemStats.PauseTotalNs
}

func readPauses() pauseSnap {
	s := []metrics.Sample{{Name: "/gc/pauses:seconds"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	var p pauseSnap
	if s[0].Value.Kind() == metrics.KindFloat64Histogram {
		h := s[0].Value.Float64Histogram()
		p.counts = append([]uint64(nil), h.Counts...)
		p.bounds = h.Buckets
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		p.cycles = s[1].Value.Uint64()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // stops the world: only outside the timed part
	p.total = ms.PauseTotalNs
	return p
}

// The pauses between two snapshots: counts per bucket, and the q-quantile
// as the upper bound of the bucket holding the floor(q * n)-th pause (the
// C side's bench_sorted_quantile_fn rank), in ms.
type pauseDist struct {
	counts []uint64
	bounds []float64
	n      uint64
}

func diffPauses(a, b pauseSnap) pauseDist {
	d := pauseDist{bounds: b.bounds, counts: make([]uint64, len(b.counts))}
	for i := range b.counts {
		d.counts[i] = b.counts[i]
		if i < len(a.counts) {
			d.counts[i] -= a.counts[i]
		}
		d.n += d.counts[i]
	}
	return d
}

func (d pauseDist) quantileMs(q float64) float64 {
	if d.n == 0 {
		return 0
	}
	rank := uint64(q * float64(d.n))
	if rank >= d.n {
		rank = d.n - 1
	}
	var seen uint64
	for i, c := range d.counts {
		seen += c
		if seen > rank {
			hi := d.bounds[i+1]
			if math.IsInf(hi, 1) {
				hi = d.bounds[i]
			}
			return hi * 1e3
		}
	}
	return 0
}

var cdfPermille = []int{10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 990, 999}

func reportPauses(r *result, a, b pauseSnap) {
	d := diffPauses(a, b)
	r.counter("gcs", float64(b.cycles-a.cycles))
	r.counter("pauses_seen", float64(d.n))
	r.counter("stw_p50_ms", d.quantileMs(0.50))
	r.counter("stw_p99_ms", d.quantileMs(0.99))
	r.counter("stw_max_ms", d.quantileMs(1.0))
	r.counter("stw_total_ms", float64(b.total-a.total)/1e6)
	for _, p := range cdfPermille {
		r.counter(fmt.Sprintf("pause_cdf_%04d_ms", p), d.quantileMs(float64(p)/1000))
	}
}

func rssPeakMiB() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}

func heapMiB() float64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapSys) / (1024 * 1024)
}

// ---- stalls and MMU (as gaps_report in C) ----------------------------------------

const (
	batch  = 16
	gapNs  = 100000
	gapMax = 1 << 18
)

type gaps struct {
	t0, t1     uint64
	start, dur []uint64
	dropped    uint64
}

func (g *gaps) pausedBefore(pre []uint64, x uint64) uint64 {
	k := sort.Search(len(g.start), func(i int) bool { return g.start[i] >= x })
	if k == 0 {
		return 0
	}
	s, end := pre[k], g.start[k-1]+g.dur[k-1]
	if end > x {
		return s - (end - x)
	}
	return s
}

func (g *gaps) mmu(pre []uint64, w uint64) float64 {
	n := len(g.start)
	span := g.t1 - g.t0
	if w >= span {
		return 1 - float64(pre[n])/float64(span)
	}
	worst := 1.0
	for i := 0; i < 2*n; i++ {
		var x uint64
		if i < n {
			x = g.start[i]
		} else {
			x = g.start[i-n] + g.dur[i-n]
			if x > g.t0+w {
				x -= w
			} else {
				x = g.t0
			}
		}
		if x+w > g.t1 {
			x = g.t1 - w
		}
		if x < g.t0 {
			x = g.t0
		}
		p := g.pausedBefore(pre, x+w) - g.pausedBefore(pre, x)
		if u := 1 - float64(p)/float64(w); u < worst {
			worst = u
		}
	}
	if worst < 0 {
		return 0
	}
	return worst
}

var mmuMs = []uint64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}

func reportGaps(r *result, gs []*gaps) {
	worst := make([]float64, len(mmuMs))
	for k := range worst {
		worst[k] = 1
	}
	util := 1.0
	var longest, stalls, dropped uint64
	for _, g := range gs {
		pre := make([]uint64, len(g.start)+1)
		for i := range g.start {
			pre[i+1] = pre[i] + g.dur[i]
			if g.dur[i] > longest {
				longest = g.dur[i]
			}
		}
		stalls += uint64(len(g.start))
		dropped += g.dropped
		if u := 1 - float64(pre[len(g.start)])/float64(g.t1-g.t0); u < util {
			util = u
		}
		for k, w := range mmuMs {
			if m := g.mmu(pre, w*1000000); m < worst[k] {
				worst[k] = m
			}
		}
	}
	r.counter("stall_max_ms", float64(longest)/1e6)
	r.counter("stalls", float64(stalls))
	if dropped > 0 {
		r.counter("stalls_dropped", float64(dropped))
	}
	r.counter("util", util)
	for k, w := range mmuMs {
		r.counter(fmt.Sprintf("mmu_%04dms", w), worst[k])
	}
}

// ---- the server workload ----------------------------------------------------------

var table []*entry // the root

// One operation: a fresh entry for slot i with its tree.
func replace(t []*entry, i uint64) {
	e := &entry{}
	a, b, c := &node{}, &node{}, &node{}
	b.i = int32(i)
	c.i = int32(i) + 1
	a.l = b
	a.r = c
	a.i = int32(i)
	e.tree = a
	e.key = i
	t[i] = e
}

func runServer(logEntries uint, r *result) {
	n := uint64(1) << logEntries
	dur := 10 * time.Second
	if logEntries >= 23 {
		dur = 30 * time.Second
	}
	if quick {
		dur = 2 * time.Second
	}
	if smoke {
		n, dur = 1<<14, 200*time.Millisecond
	}
	table = make([]*entry, n)
	for i := uint64(0); i < n; i++ {
		replace(table, i)
	}
	const threads = 2
	gs := make([]*gaps, threads)
	ops := make([]uint64, threads)
	var ready int32
	var wg sync.WaitGroup
	goCh := make(chan struct{})
	before := readPauses()
	var endNs uint64
	for t := 0; t < threads; t++ {
		gs[t] = &gaps{start: make([]uint64, 0, 1024), dur: make([]uint64, 0, 1024)}
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			g := gs[t]
			tab := table
			seed := uint64(0x9E3779B97F4A7C15) * uint64(t+1)
			atomic.AddInt32(&ready, 1)
			<-goCh
			end := atomic.LoadUint64(&endNs)
			last := nowNs()
			g.t0 = last
			var done uint64
			for {
				for k := 0; k < batch; k++ {
					i := ((rnd(&seed) >> 32) * n) >> 32
					replace(tab, i)
				}
				done += batch
				now := nowNs()
				if now-last > gapNs {
					if len(g.start) < gapMax {
						g.start = append(g.start, last)
						g.dur = append(g.dur, now-last)
					} else {
						g.dropped++
					}
				}
				last = now
				if now >= end {
					break
				}
			}
			g.t1 = last
			ops[t] = done
		}(t)
	}
	for atomic.LoadInt32(&ready) < threads {
		runtime.Gosched()
	}
	t0 := nowNs()
	atomic.StoreUint64(&endNs, t0+uint64(dur))
	close(goCh)
	wg.Wait()
	t1 := nowNs()
	after := readPauses()
	var total uint64
	for _, o := range ops {
		total += o
	}
	for i := uint64(0); i < n; i++ {
		e := table[i]
		if e == nil || e.key != i || e.tree == nil || e.tree.i != int32(i) || e.tree.l == nil ||
			e.tree.r == nil || e.tree.l.i != int32(i) || e.tree.r.i != int32(i)+1 {
			r.err = fmt.Sprintf("entry %d was damaged", i)
			return
		}
	}
	r.ns = float64(t1 - t0)
	r.ops = float64(total)
	reportPauses(r, before, after)
	reportGaps(r, gs)
	r.counter("secs", float64(t1-t0)/1e9)
	r.counter("rss_peak_MiB", rssPeakMiB())
	r.counter("heap_MiB", heapMiB())
	table = nil
}

// ---- the tree ---------------------------------------------------------------------

func makeTree(depth int) *node {
	n := &node{i: int32(depth)}
	if depth > 0 {
		n.l = makeTree(depth - 1)
		n.r = makeTree(depth - 1)
	}
	return n
}

func countTree(n *node) int64 {
	if n == nil {
		return 0
	}
	return 1 + countTree(n.l) + countTree(n.r)
}

var treeRoot *node

func runTree(procs int, r *result) {
	depth := 24
	if quick {
		depth = 22
	}
	if smoke {
		depth = 14
	}
	runtime.GOMAXPROCS(procs)
	treeRoot = makeTree(depth)
	runtime.GC() // warm-up (untimed)
	t0 := nowNs()
	runtime.GC()
	t1 := nowNs()
	nodes := int64(2)<<depth - 1
	if countTree(treeRoot) != nodes {
		r.err = "the tree lost nodes"
		return
	}
	r.ns = float64(t1 - t0)
	r.ops = 1
	r.counter("secs", float64(t1-t0)/1e9)
	r.counter("tree_MiB", float64(nodes)*32/(1024*1024))
	r.counter("markers_asked", float64(procs))
	r.counter("markers", float64(runtime.GOMAXPROCS(0)))
	treeRoot = nil
}

// ---- GCBench ------------------------------------------------------------------------

const (
	gcbStretch   = 18
	gcbLongLived = 16
	gcbArray     = 500000
	gcbMinDepth  = 4
	gcbMaxDepth  = 16
)

func gcbTreeSize(depth int) int64 { return int64(1)<<(depth+1) - 1 }

func gcbPopulate(depth int, n *node) {
	if depth <= 0 {
		return
	}
	depth--
	n.l = &node{}
	n.r = &node{}
	gcbPopulate(depth, n.l)
	gcbPopulate(depth, n.r)
}

func gcbMakeTree(depth int) *node {
	if depth <= 0 {
		return &node{}
	}
	l, r := gcbMakeTree(depth-1), gcbMakeTree(depth-1)
	return &node{l: l, r: r}
}

var gcbSink *node
var gcbLong *node
var gcbArr []float64

func gcbTimeConstruction(depth int) {
	iters := 2 * gcbTreeSize(gcbStretch) / gcbTreeSize(depth)
	for i := int64(0); i < iters; i++ {
		t := &node{}
		gcbPopulate(depth, t)
		gcbSink = t
	}
	for i := int64(0); i < iters; i++ {
		gcbSink = gcbMakeTree(depth)
	}
}

func runGCBench(r *result) {
	before := readPauses()
	t0 := nowNs()
	gcbSink = gcbMakeTree(gcbStretch)
	gcbSink = nil
	gcbLong = &node{}
	gcbPopulate(gcbLongLived, gcbLong)
	gcbArr = make([]float64, gcbArray)
	for i := 1; i < gcbArray/2; i++ {
		gcbArr[i] = 1.0 / float64(i)
	}
	for d := gcbMinDepth; d <= gcbMaxDepth; d += 2 {
		gcbTimeConstruction(d)
	}
	t1 := nowNs()
	after := readPauses()
	if countTree(gcbLong) != gcbTreeSize(gcbLongLived) || gcbArr[1000] != 1.0/1000 {
		r.err = "the long-lived tree or array was damaged"
		return
	}
	r.ns = float64(t1 - t0)
	r.ops = 1
	reportPauses(r, before, after)
	r.counter("rss_peak_MiB", rssPeakMiB())
	gcbLong, gcbArr, gcbSink = nil, nil, nil
}

// ---- the write barrier while no mark runs --------------------------------------------

const wbSlots = 4096

var wbTable []*node
var wbNodes [2]*node

func runWrite(r *result) {
	debug.SetGCPercent(-1) // no collection during the loop (C: a manual-only heap)
	defer debug.SetGCPercent(100)
	wbTable = make([]*node, wbSlots)
	wbNodes[0], wbNodes[1] = &node{}, &node{}
	n := uint64(10000000)
	if smoke {
		n = 100000
	}
	t, v := wbTable[:wbSlots], wbNodes // a constant length: no bounds check in the loop
	t0 := nowNs()
	for i := uint64(0); i < n; i++ {
		t[i&(wbSlots-1)] = v[i&1] // the compiler's write-barrier check, as in any Go store
	}
	t1 := nowNs()
	if t[0] != v[0] || t[wbSlots-1] != v[1] {
		r.err = "a store was lost"
		return
	}
	r.ns = float64(t1 - t0)
	r.ops = float64(n)
}

// ---- the worker protocol -----------------------------------------------------------

type caseInfo struct {
	workload, unit string
	throughput     bool
	run            func(r *result)
}

func cases() []caseInfo {
	srvUnit := func(live string, secs int) string {
		return fmt.Sprintf("op (entry + 3-node tree replaced; %s live, 2 mutators, %d s)", live, secs)
	}
	tree := "1 GiB"
	if quick {
		tree = "256 MiB"
	}
	cs := []caseInfo{}
	if quick {
		cs = append(cs, caseInfo{"gcserver_256m", srvUnit("256 MiB", 2), true, func(r *result) { runServer(21, r) }})
	} else {
		cs = append(cs, caseInfo{"gcserver_256m", srvUnit("256 MiB", 10), true, func(r *result) { runServer(21, r) }},
			caseInfo{"gcserver_1g", srvUnit("1 GiB", 30), true, func(r *result) { runServer(23, r) }})
	}
	return append(cs,
		caseInfo{"gcserver_tree_m1", "full collection, " + tree + " binary tree, 1 marker", false, func(r *result) { runTree(1, r) }},
		caseInfo{"gcserver_tree_m2", "full collection, " + tree + " binary tree, 2 markers", false, func(r *result) { runTree(2, r) }},
		caseInfo{"gcserver_write", "pointer store into a heap object, no mark running (tp: tp_heap_write)", true, runWrite},
		caseInfo{"gcserver_gcbench", "GCBench run (stretch 18, long-lived 16, 500 k doubles)", false, runGCBench})
}

func caseName(w string) string { return "BM_" + w + "/go" }

func list() {
	fmt.Printf("info\tgo\t%s\n", runtime.Version())
	for _, c := range cases() {
		tp := 0
		if c.throughput {
			tp = 1
		}
		fmt.Printf("case\t%s\t%s\tgo\tgcserver\t%s\t%d\n", caseName(c.workload), c.workload, c.unit, tp)
	}
}

// The result as Google Benchmark JSON (what the driver's ParseResult reads).
func encode(name string, r *result) []byte {
	b := map[string]interface{}{"name": name + "/iterations:1/manual_time", "iterations": 1}
	if r.err != "" {
		b["error_occurred"] = true
		b["error_message"] = r.err
	} else {
		b["ns_per_op"] = r.ns / r.ops
		b["real_time"] = r.ns / 1e3
		for k, v := range r.counters {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				b[k] = v
			}
		}
	}
	out, _ := json.Marshal(map[string]interface{}{
		"context":    map[string]interface{}{"executable": "bench_go", "go": runtime.Version()},
		"benchmarks": []interface{}{b},
	})
	return out
}

func main() {
	debug.SetGCPercent(100)
	filter, outPath := "", ""
	for _, a := range os.Args[1:] {
		switch {
		case a == "--bench_list":
			list()
			return
		case a == "--smoke":
			smoke = true
		case strings.HasPrefix(a, "--benchmark_filter="):
			filter = strings.TrimPrefix(a, "--benchmark_filter=")
		case strings.HasPrefix(a, "--benchmark_out="):
			outPath = strings.TrimPrefix(a, "--benchmark_out=")
		case strings.HasPrefix(a, "--benchmark_"):
			// min_time, out_format: the cases have fixed sizes
		default:
			fmt.Fprintf(os.Stderr, "bench_go: unknown argument %s\n", a)
			os.Exit(2)
		}
	}
	if filter == "" {
		fmt.Fprintln(os.Stderr, "usage: bench_go --bench_list | --benchmark_filter=REGEX [--benchmark_out=FILE] [--smoke]")
		os.Exit(2)
	}
	re, err := regexp.Compile(filter)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench_go: bad filter: %v\n", err)
		os.Exit(2)
	}
	var results [][]byte
	for _, c := range cases() {
		if !re.MatchString(caseName(c.workload)) {
			continue
		}
		r := newResult()
		c.run(r)
		j := encode(caseName(c.workload), r)
		fmt.Printf("result %s\n", j)
		results = append(results, j)
		runtime.GC()
	}
	if len(results) == 0 {
		fmt.Fprintf(os.Stderr, "bench_go: no case matches %s\n", filter)
		os.Exit(1)
	}
	if outPath != "" {
		// One case per process under the driver: the last result is the file.
		if err := os.WriteFile(outPath, results[len(results)-1], 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "bench_go: %v\n", err)
			os.Exit(1)
		}
	}
}
