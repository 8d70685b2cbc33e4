package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Report is the outcome of Run.
type Report struct {
	// Rows are the table's rows, in order.
	Rows []*Row
	// Systems are the table's columns, in order.
	Systems []System
	// Notes say what the cases measured, one paragraph each.
	Notes []string

	RedisVersion string
	// Cluster is the shape of the cluster of the cluster cases, as
	// "3 masters, 0 replicas"; "" when none ran.
	Cluster    string
	GoVersion  string
	GOMAXPROCS int
	Started    time.Time
	Elapsed    time.Duration
	Duration   time.Duration // of each round of a throughput measurement
	Rounds     int           // of each throughput measurement
}

// Row is one figure measured on every system it applies to.
type Row struct {
	Case   string // the case id (see CaseIDs)
	Metric string // short name of the figure, as in the progress line
	Title  string // what the row measures, for the table
	Size   int    // payload bytes; 0 when the case has no payload
	Unit   Unit
	// NoRatio is set where adapter / raw go-redis says nothing: raw
	// go-redis holds nothing of the kind (goroutine stacks).
	NoRatio bool
	// Values by system id; a system the row does not apply to has none.
	Values map[string]Value
}

// Value is one cell of the table.
type Value struct {
	V   float64
	Err error // the measurement failed; V is meaningless
	// Skipped, when not "", says why the cell was not measured, as the
	// table shows it: "not installed" (the system's server is not), "n/a"
	// (the case means nothing for the system). V is meaningless.
	Skipped string
}

// What a cell that was not measured says (Value.Skipped).
const (
	notInstalled  = "not installed"
	notApplicable = "n/a"
)

// measured reports whether v holds a measured figure.
func (v Value) measured() bool { return v.Err == nil && v.Skipped == "" }

// Ratio returns the default adapter's value divided by raw go-redis's,
// and whether both were measured and the ratio means something.
func (r *Row) Ratio() (float64, bool) {
	if r.NoRatio {
		return 0, false
	}
	raw, ok1 := r.Values[sysRaw]
	ad, ok2 := r.Values[sysAdapter]
	if !ok1 || !ok2 || !raw.measured() || !ad.measured() || raw.V == 0 {
		return 0, false
	}
	return ad.V / raw.V, true
}

// Unit is the unit of a row's values.
type Unit int

const (
	// PerSecond is messages per second; more is better.
	PerSecond Unit = iota
	// Seconds is a duration; less is better.
	Seconds
	// Bytes is memory; less is better.
	Bytes
	// Count is a number per message (allocations, cluster bus messages);
	// less is better.
	Count
	// Ratio is a quotient of two figures of the same system, which the
	// row's title names.
	Ratio
)

// format formats v for a table cell.
func (u Unit) format(v float64) string {
	switch u {
	case PerSecond:
		return formatCount(int(math.Round(v)))
	case Seconds:
		return formatDuration(v)
	case Bytes:
		return formatCount(int(math.Round(v))) + " B"
	case Ratio:
		return formatRatio(v)
	default:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
}

// WriteTable writes the report as a markdown table, one column per system
// and a last column with the ratio adapter (envelope) / raw go-redis,
// followed by notes on what the cases measured, the failures, if any, and
// a line saying how and where it was measured. A system that no row
// applies to has no column. A cell is "—" where the row does not apply to
// the system, "failed" where the measurement failed, and Value.Skipped
// ("not installed", "n/a") where it was not measured.
func (rep *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	b.WriteString("| case | size |")
	columns := rep.columns()
	for _, s := range columns {
		b.WriteString(" " + s.Title + " |")
	}
	b.WriteString(" adapter / raw |\n|---|---|")
	b.WriteString(strings.Repeat("---:|", len(columns)+1))
	b.WriteString("\n")
	var failures []string
	prev := ""
	for _, row := range rep.Rows {
		title := row.Title
		if title == prev {
			title = "" // the size says it all
		}
		prev = row.Title
		size := ""
		if row.Size > 0 {
			size = formatSize(row.Size)
		}
		fmt.Fprintf(&b, "| %s | %s |", title, size)
		for _, s := range columns {
			v, ok := row.Values[s.ID]
			switch {
			case !ok:
				b.WriteString(" — |")
			case v.Err != nil:
				b.WriteString(" failed |")
				failures = append(failures, fmt.Sprintf("- %s, %s, %s: %v", row.Title, sizeOrNone(row.Size), s.Title, v.Err))
			case v.Skipped != "":
				b.WriteString(" " + v.Skipped + " |")
			default:
				b.WriteString(" " + row.Unit.format(v.V) + " |")
			}
		}
		if ratio, ok := row.Ratio(); ok {
			fmt.Fprintf(&b, " %s |\n", formatRatio(ratio))
		} else {
			b.WriteString(" — |\n")
		}
	}
	if len(rep.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range rep.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	if len(failures) > 0 {
		b.WriteString("\nFailed:\n\n")
		b.WriteString(strings.Join(dedupe(failures), "\n"))
		b.WriteString("\n")
	}
	cluster := ""
	if rep.Cluster != "" {
		cluster = "; cluster of " + rep.Cluster
	}
	fmt.Fprintf(&b, "\n(%s, Redis %s, %s, GOMAXPROCS %d%s; throughput: median of %d rounds of %v, the systems taking turns; run took %v.)\n",
		rep.Started.Format("2006-01-02"), rep.RedisVersion, rep.GoVersion, rep.GOMAXPROCS, cluster,
		rep.Rounds, rep.Duration, rep.Elapsed.Round(time.Second))
	_, err := io.WriteString(w, b.String())
	return err
}

// columns are the Systems that have a value, or a failure, in a row.
func (rep *Report) columns() []System {
	var out []System
	for _, s := range rep.Systems {
		for _, row := range rep.Rows {
			if _, ok := row.Values[s.ID]; ok {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// dedupe removes repeated lines (a failed measurement fills several rows).
func dedupe(lines []string) []string {
	seen := make(map[string]bool, len(lines))
	out := lines[:0]
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

func sizeOrNone(size int) string {
	if size == 0 {
		return "no payload"
	}
	return formatSize(size)
}

// formatSize formats a payload size: "16 B", "4 KiB".
func formatSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	default:
		return strconv.Itoa(n) + " B"
	}
}

// formatCount formats n with thousands separators: "100,000".
func formatCount(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatRatio formats a ratio: "1.62×".
func formatRatio(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

// formatDuration formats seconds with three significant digits in the
// largest unit that keeps the number at least 1: "85.2 µs", "233 ms".
func formatDuration(seconds float64) string {
	units := []struct {
		name  string
		scale float64
	}{{"s", 1}, {"ms", 1e-3}, {"µs", 1e-6}, {"ns", 1e-9}}
	for _, u := range units {
		if v := seconds / u.scale; v >= 1 || u.name == "ns" {
			return strconv.FormatFloat(v, 'f', max(0, 2-int(math.Floor(math.Log10(math.Max(v, 1))))), 64) + " " + u.name
		}
	}
	return ""
}
