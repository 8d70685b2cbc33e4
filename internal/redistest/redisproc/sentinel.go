package redisproc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of SentinelOptions.
const (
	DefaultMasterName      = "mymaster"
	DefaultDownAfter       = time.Second
	DefaultFailoverTimeout = 5 * time.Second
)

// SentinelTimeout bounds StartSentinel and each wait of a Sentinel for
// the servers and sentinels to settle (Sentinel.WaitOK).
const SentinelTimeout = 30 * time.Second

// SentinelOptions configure StartSentinel.
type SentinelOptions struct {
	// MasterName is the name the sentinels monitor the master by; ""
	// means DefaultMasterName.
	MasterName string
	// Replicas is the number of replicas of the master; 0 means 1.
	Replicas int
	// Sentinels is the number of sentinels, which take their decisions by
	// a majority (quorum Sentinels/2+1); 0 means 1.
	Sentinels int
	// DownAfter is the sentinels' down-after-milliseconds: how long the
	// master may not answer before it is failed over. 0 means
	// DefaultDownAfter.
	DownAfter time.Duration
	// FailoverTimeout is the sentinels' failover-timeout (a failed attempt
	// is retried after twice that); 0 means DefaultFailoverTimeout.
	FailoverTimeout time.Duration
	// Binary is the redis-server to run, for the sentinels too (as
	// redis-server <config> --sentinel, so no redis-sentinel binary is
	// needed); "" means the result of Binary.
	Binary string
	// Dir is the directory that holds one directory per process
	// (server0 for the master, server1... for the replicas, sentinel0...);
	// it must exist. "" means a new temporary directory that Close
	// removes.
	Dir string
	// Args are extra options of the master and the replicas, as in
	// Options.Args. They run with --repl-diskless-sync-delay 0 unless
	// Args say otherwise.
	Args []string
	// Logf, as in Options.Logf.
	Logf func(format string, args ...any)
}

// Sentinel is a master, its replicas and the Redis Sentinels that monitor
// them, on 127.0.0.1, started by StartSentinel. Its methods are safe for
// concurrent use, but KillMaster calls should not overlap. Close stops
// every process.
type Sentinel struct {
	name      string
	servers   []*Server
	sentinels []*Server
	dir       string
	ownDir    bool
}

// StartSentinel starts a master, opts.Replicas replicas of it
// (--replicaof) and opts.Sentinels sentinels that monitor it, and waits
// until they have settled (see WaitOK).
func StartSentinel(opts SentinelOptions) (_ *Sentinel, err error) {
	name := cmp.Or(opts.MasterName, DefaultMasterName)
	replicas := cmp.Or(opts.Replicas, 1)
	sentinels := cmp.Or(opts.Sentinels, 1)
	downAfter := cmp.Or(opts.DownAfter, DefaultDownAfter)
	failoverTimeout := cmp.Or(opts.FailoverTimeout, DefaultFailoverTimeout)
	if replicas < 0 || sentinels < 0 {
		return nil, fmt.Errorf("redisproc: StartSentinel: %d replicas, %d sentinels", replicas, sentinels)
	}
	s := &Sentinel{name: name, dir: opts.Dir}
	if s.dir, s.ownDir, err = workDir(s.dir, "redisproc-sentinel-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	start := func(sub string, o Options) (*Server, error) {
		o.Binary, o.Logf = opts.Binary, opts.Logf
		return startIn(s.dir, sub, o)
	}
	args := append([]string{"--repl-diskless-sync-delay", "0"}, opts.Args...)
	master, err := start("server0", Options{Args: args})
	if err != nil {
		return nil, err
	}
	s.servers = append(s.servers, master)
	for i := 1; i <= replicas; i++ {
		a := append(slices.Clone(args), "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
		r, err := start("server"+strconv.Itoa(i), Options{Args: a})
		if err != nil {
			return nil, err
		}
		s.servers = append(s.servers, r)
	}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d\n"+
		"sentinel down-after-milliseconds %[1]s %[4]d\n"+
		"sentinel failover-timeout %[1]s %[5]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		name, master.Port(), sentinels/2+1, downAfter.Milliseconds(), failoverTimeout.Milliseconds())
	for i := range sentinels {
		sub := "sentinel" + strconv.Itoa(i)
		path := filepath.Join(s.dir, sub+".conf")
		// The sentinel rewrites its file with what it learns.
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("redisproc: %w", err)
		}
		sn, err := start(sub, Options{sentinelConf: path})
		if err != nil {
			return nil, err
		}
		s.sentinels = append(s.sentinels, sn)
	}
	if err := s.WaitOK(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// MasterName returns the name the sentinels know the master by.
func (s *Sentinel) MasterName() string { return s.name }

// SentinelAddrs returns the addresses of the sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// FailoverOptions returns new options for redis.NewFailoverClient with the
// master name and the sentinels' addresses set; the caller may set more.
func (s *Sentinel) FailoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{MasterName: s.name, SentinelAddrs: s.SentinelAddrs()}
}

// Servers returns the master and its replicas, running or not, the first
// master first; roles change with failovers, Master tells the current one.
func (s *Sentinel) Servers() []*Server { return slices.Clone(s.servers) }

// Sentinels returns the sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return slices.Clone(s.sentinels) }

// Master returns the server that the running sentinels name as the master
// (SENTINEL GET-MASTER-ADDR-BY-NAME); it fails if they disagree.
func (s *Sentinel) Master(ctx context.Context) (*Server, error) {
	var master *Server
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		v, err := sn.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.name)
		if err != nil {
			return nil, fmt.Errorf("redisproc: sentinel %s: %w", sn.Addr(), err)
		}
		addr, _ := v.([]any)
		if len(addr) != 2 {
			return nil, fmt.Errorf("redisproc: sentinel %s: GET-MASTER-ADDR-BY-NAME: %#v", sn.Addr(), v)
		}
		port, _ := strconv.Atoi(fmt.Sprint(addr[1]))
		m := s.serverAt(port)
		if m == nil {
			return nil, fmt.Errorf("redisproc: sentinel %s names %v:%v, not one of the servers", sn.Addr(), addr[0], addr[1])
		}
		if master != nil && m != master {
			return nil, fmt.Errorf("redisproc: sentinels disagree: %s and %s", master.Addr(), m.Addr())
		}
		master = m
	}
	if master == nil {
		return nil, errors.New("redisproc: no sentinel is running")
	}
	return master, nil
}

func (s *Sentinel) serverAt(port int) *Server {
	for _, sv := range s.servers {
		if sv.Port() == port {
			return sv
		}
	}
	return nil
}

// WaitOK waits, bounded by ctx and by SentinelTimeout, until the setup
// has settled: the running sentinels name the same master, which is
// running and has the master role; no sentinel has a failover in
// progress; every other running server replicates it with its link up;
// and every running sentinel sees every running replica and every other
// running sentinel as up. StartSentinel and KillMaster call it; call it
// after restarting a process.
func (s *Sentinel) WaitOK(ctx context.Context) error {
	if err := pollFor(ctx, SentinelTimeout, s.check); err != nil {
		return fmt.Errorf("redisproc: sentinel setup not ok: %w", err)
	}
	return nil
}

func (s *Sentinel) check(ctx context.Context) error {
	master, err := s.Master(ctx)
	if err != nil {
		return err
	}
	if !master.Running() {
		return fmt.Errorf("master %s is not running", master.Addr())
	}
	var replicas []int
	for _, sv := range s.servers {
		if !sv.Running() {
			continue
		}
		info, err := sv.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if sv == master {
			if info["role"] != "master" {
				return fmt.Errorf("master %s has role %q", sv.Addr(), info["role"])
			}
			continue
		}
		if info["role"] != "slave" || info["master_port"] != strconv.Itoa(master.Port()) || info["master_link_status"] != "up" {
			return fmt.Errorf("%s: role %q, master port %q, link %q; want a replica of %s, link up",
				sv.Addr(), info["role"], info["master_port"], info["master_link_status"], master.Addr())
		}
		replicas = append(replicas, sv.Port())
	}
	var sentinels []int
	for _, sn := range s.sentinels {
		if sn.Running() {
			sentinels = append(sentinels, sn.Port())
		}
	}
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		v, err := sn.Do(ctx, "SENTINEL", "MASTER", s.name)
		if err != nil {
			return fmt.Errorf("sentinel %s: SENTINEL MASTER: %w", sn.Addr(), err)
		}
		// "master" alone: no failover in progress, not down.
		if flags := pairs(v)["flags"]; flags != "master" {
			return fmt.Errorf("sentinel %s: master flags %q", sn.Addr(), flags)
		}
		if err := s.sees(ctx, sn, "REPLICAS", replicas); err != nil {
			return err
		}
		others := slices.DeleteFunc(slices.Clone(sentinels), func(p int) bool { return p == sn.Port() })
		if err := s.sees(ctx, sn, "SENTINELS", others); err != nil {
			return err
		}
	}
	return nil
}

// sees checks that sentinel sn lists (SENTINEL REPLICAS or SENTINELS) each
// of ports as up.
func (s *Sentinel) sees(ctx context.Context, sn *Server, what string, ports []int) error {
	v, err := sn.Do(ctx, "SENTINEL", what, s.name)
	if err != nil {
		return fmt.Errorf("sentinel %s: SENTINEL %s: %w", sn.Addr(), what, err)
	}
	up := make(map[int]bool)
	list, _ := v.([]any)
	for _, item := range list {
		fields := pairs(item)
		port, _ := strconv.Atoi(fields["port"])
		flags := strings.Split(fields["flags"], ",")
		if !slices.ContainsFunc(flags, func(f string) bool {
			return f == "s_down" || f == "o_down" || f == "disconnected"
		}) {
			up[port] = true
		}
	}
	for _, p := range ports {
		if !up[p] {
			return fmt.Errorf("sentinel %s: SENTINEL %s does not list port %d as up: %v", sn.Addr(), what, p, v)
		}
	}
	return nil
}

// pairs turns a RESP2 flat list of names and values into a map.
func pairs(v any) map[string]string {
	m := make(map[string]string)
	l, _ := v.([]any)
	for i := 0; i+1 < len(l); i += 2 {
		m[fmt.Sprint(l[i])] = fmt.Sprint(l[i+1])
	}
	return m
}

// KillMaster kills the current master (Server.Kill) and waits until the
// sentinels have promoted a running replica and the setup has settled
// (WaitOK); it returns the new master. Restart the old master and call
// WaitOK to have it back: the sentinels make it a replica, about 8s after
// it is back (Sentinel waits that long before it reconfigures an instance
// that reports the wrong role). How long the
// promotion takes depends on DownAfter (about DownAfter plus a second or
// two).
func (s *Sentinel) KillMaster(ctx context.Context) (*Server, error) {
	old, err := s.Master(ctx)
	if err != nil {
		return nil, err
	}
	if err := old.Kill(); err != nil {
		return nil, err
	}
	var promoted *Server
	err = pollFor(ctx, SentinelTimeout, func(ctx context.Context) error {
		if err := s.check(ctx); err != nil {
			return err
		}
		m, err := s.Master(ctx)
		if err != nil {
			return err
		}
		if m == old {
			return fmt.Errorf("sentinels still name %s", old.Addr())
		}
		promoted = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisproc: sentinel failover: %w", err)
	}
	return promoted, nil
}

// Close stops every process, as Server.Close does, and removes the
// directory that StartSentinel made, if it made one.
func (s *Sentinel) Close() error {
	return closeAll(append(slices.Clone(s.sentinels), s.servers...), s.dir, s.ownDir)
}
