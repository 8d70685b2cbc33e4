# bench.awk turns the output of `go test -bench BenchmarkTracing -rounds N`
# (module otel) into a markdown table: per case the median of its rounds
# of msg/s, bytes and allocations per message, and msg/s as a ratio to
# tracing off. The go test output goes on to stderr as progress; the table
# goes to stdout. It fails when go test failed or printed no result.
# Used by `make bench-otel`.

{ print > "/dev/stderr" }

/^(FAIL|panic:)/ { failed = 1 }

/^BenchmarkTracing\// {
	name = $1
	sub(/^BenchmarkTracing\/(round-[0-9]+\/)?/, "", name)
	sub(/-[0-9]+$/, "", name)
	if (!(name in rounds)) {
		order[++cases] = name
	}
	r = ++rounds[name]
	for (i = 3; i < NF; i++) {
		if ($(i + 1) == "msg/s") rate[name, r] = $i
		if ($(i + 1) == "B/op") bytes[name, r] = $i
		if ($(i + 1) == "allocs/op") allocs[name, r] = $i
	}
}

# median of the n values v[name, 1..n]
function median(v, name, n,    i, j, a, t) {
	for (i = 1; i <= n; i++) a[i] = v[name, i] + 0
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
		a[j + 1] = t
	}
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}

END {
	if (failed || cases == 0) {
		print "bench.awk: the benchmark failed or printed no result" > "/dev/stderr"
		exit 1
	}
	off = median(rate, "off", rounds["off"])
	printf "| tracing | end to end (msg/s, median of %d) | bytes per message | allocations per message | msg/s / off |\n", rounds[order[1]]
	print "|---|---:|---:|---:|---:|"
	for (c = 1; c <= cases; c++) {
		name = order[c]
		n = rounds[name]
		m = median(rate, name, n)
		printf "| %s | %d | %d | %d | %s |\n", name, m, median(bytes, name, n), median(allocs, name, n), (off > 0 ? sprintf("%.2f×", m / off) : "n/a")
	}
}
