package acceptance

// The etcd side of the fleet benchmarks (bench_fleet_test.go): a 3-member
// etcd 3.4 cluster (Debian's etcd-server, which scripts/bench.sh installs) on
// loopback, driven by the same load generator as the Flotilla fleet, in the
// same run.
//
// Set up like Flotilla's fleet: clients reach members over TLS with a server
// certificate from a CA made for the run (no client certificates, and etcd's
// own auth off; Flotilla checks a bearer token instead), members talk to each
// other over mutual TLS (as Flotilla's raft does), every member fsyncs its
// WAL, and raft runs at etcd's defaults (heartbeat 100 ms, election timeout
// 1 s; Flotilla's fleet runs hashicorp/raft at --raft-multiplier 1).
//
// The writers speak etcd's gRPC API (KV.Put, unary, protobuf over HTTP/2 and
// TLS), the protocol etcd's Go client speaks, through google.golang.org/grpc
// with hand-encoded messages. etcd's client module (go.etcd.io/etcd/client/v3,
// v3.6.16 from the proxy) is not used because adding it upgrades grpc, x/net,
// x/sys, x/crypto and otel for the whole module.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// etcdKeyPrefix holds the benchmark's deployments, one key each, as
// Kubernetes keeps its objects in etcd.
const etcdKeyPrefix = "/flotilla/deployments/default/"

// etcdCluster is 3 etcd members on 127.0.0.1, each with its own ports and
// data dir under one temporary directory.
type etcdCluster struct {
	dir     string
	version string
	tls     *tls.Config  // what clients use: trusts the run's CA
	http    *http.Client // for /metrics
	nodes   []*etcdMember
}

type etcdMember struct {
	name, dataDir, log string
	clientAddr         string // 127.0.0.1:port, TLS
	args               []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// startEtcd starts a fresh 3-member cluster and waits until every member
// answers a write. b's cleanup kills the members and removes their data,
// whether b passed or not.
func startEtcd(b *testing.B) *etcdCluster {
	b.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		b.Fatal("etcd is not on PATH: install Debian's etcd-server (scripts/bench.sh does: apt-get install etcd-server)")
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		b.Fatalf("etcd --version: %v", err)
	}
	ver, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	ec := &etcdCluster{dir: b.TempDir(), version: strings.TrimPrefix(ver, "etcd Version: ")}
	caPEM, err := ec.writeCerts()
	if err != nil {
		b.Fatalf("etcd certificates: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	ec.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr := &http.Transport{TLSClientConfig: ec.tls, Proxy: nil}
	ec.http = &http.Client{Transport: tr, Timeout: 2 * time.Second}

	var peers []string
	for i := range 3 {
		cp, err1 := freePort()
		pp, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			b.Fatal(err)
		}
		m := &etcdMember{
			name:       fmt.Sprintf("etcd%d", i+1),
			clientAddr: fmt.Sprintf("127.0.0.1:%d", cp),
		}
		m.dataDir = filepath.Join(ec.dir, m.name)
		m.log = filepath.Join(ec.dir, m.name+".log")
		peerURL := fmt.Sprintf("https://127.0.0.1:%d", pp)
		peers = append(peers, m.name+"="+peerURL)
		m.args = []string{bin,
			"--name", m.name, "--data-dir", m.dataDir,
			"--listen-client-urls", "https://" + m.clientAddr, "--advertise-client-urls", "https://" + m.clientAddr,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--cert-file", filepath.Join(ec.dir, "member.pem"), "--key-file", filepath.Join(ec.dir, "member-key.pem"),
			"--peer-cert-file", filepath.Join(ec.dir, "member.pem"), "--peer-key-file", filepath.Join(ec.dir, "member-key.pem"),
			"--peer-trusted-ca-file", filepath.Join(ec.dir, "ca.pem"), "--peer-client-cert-auth",
			"--logger", "zap", "--log-outputs", "stderr",
		}
		ec.nodes = append(ec.nodes, m)
	}
	for _, m := range ec.nodes {
		// Ignored once the data dir exists: a restart rejoins as a member.
		m.args = append(m.args, "--initial-cluster", strings.Join(peers, ","),
			"--initial-cluster-token", filepath.Base(ec.dir), "--initial-cluster-state", "new")
	}
	b.Cleanup(func() {
		for _, m := range ec.nodes {
			m.kill()
			if b.Failed() {
				b.Logf("%s log (last lines):\n%s", m.name, tail(readFile(m.log), 2000))
			}
		}
		// b.TempDir removes the data dirs after this.
	})
	for _, m := range ec.nodes {
		if err := m.start(); err != nil {
			b.Fatal(err)
		}
	}
	for k := range ec.nodes {
		ec.waitServing(b, k)
	}
	return ec
}

func readFile(path string) string {
	raw, _ := os.ReadFile(path)
	return string(raw)
}

func (m *etcdMember) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(m.args[0], m.args[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // no ETCD_* from the environment
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and killed with this process should the
	// benchmark die before its cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	m.cmd, m.exited = cmd, exited
	return nil
}

func (m *etcdMember) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// kill ends the member with SIGKILL (a crash) and waits until it is gone.
func (m *etcdMember) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

func (m *etcdMember) pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// metrics returns the value of every unlabelled metric in member k's
// /metrics that starts with prefix.
func (ec *etcdCluster) metrics(ctx context.Context, k int, prefix string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+ec.nodes[k].clientAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := ec.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %s", ec.nodes[k].name, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	return m, sc.Err()
}

// leader is the index of the running member that reports itself leader.
func (ec *etcdCluster) leader(ctx context.Context) (int, error) {
	for k, m := range ec.nodes {
		if !m.running() {
			continue
		}
		v, err := ec.metrics(ctx, k, "etcd_server_is_leader")
		if err == nil && v["etcd_server_is_leader"] == 1 {
			return k, nil
		}
	}
	return 0, errors.New("no etcd member reports itself leader")
}

// waitServing waits until member k has a leader and has applied a write of
// its own: it is part of the cluster and serves writes.
func (ec *etcdCluster) waitServing(b *testing.B, k int) {
	b.Helper()
	m := ec.nodes[k]
	w, err := ec.connect([]int{k})
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	waitUntil(b, 60*time.Second, m.name+" serves writes", func(ctx context.Context) error {
		if !m.running() {
			return fmt.Errorf("%s exited: %s", m.name, tail(readFile(m.log), 500))
		}
		v, err := ec.metrics(ctx, k, "etcd_server_has_leader")
		if err != nil {
			return err
		}
		if v["etcd_server_has_leader"] != 1 {
			return fmt.Errorf("%s has no leader", m.name)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return w.write(wctx, 0, "ready-"+m.name)
	})
}

// elections counts the raft elections won, from every member's log.
func (ec *etcdCluster) elections() int {
	k := 0
	for _, m := range ec.nodes {
		k += strings.Count(readFile(m.log), "became leader at term")
	}
	return k
}

// --- etcd's gRPC API, by hand ----------------------------------------------------

// rawCodec passes messages encoded with protowire through gRPC unchanged.
// Its name makes the content type application/grpc+proto, as etcd expects.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// etcdWriter is one writer's own connections (one HTTP/2 connection each)
// to the members it writes through.
type etcdWriter struct {
	conns []*grpc.ClientConn
}

func (ec *etcdCluster) connect(via []int) (*etcdWriter, error) {
	w := &etcdWriter{}
	for _, k := range via {
		cc, err := grpc.NewClient("passthrough:///"+ec.nodes[k].clientAddr,
			grpc.WithTransportCredentials(credentials.NewTLS(ec.tls.Clone())),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(256<<20)))
		if err != nil {
			w.close()
			return nil, fmt.Errorf("grpc client for %s: %w", ec.nodes[k].name, err)
		}
		w.conns = append(w.conns, cc)
	}
	return w, nil
}

// write puts name's deployment, as the JSON the Flotilla writers send, under
// etcdKeyPrefix+name through the i-th member it was dialled to (etcd's
// KV.Put: PutRequest{key = 1, value = 2}).
func (w *etcdWriter) write(ctx context.Context, i int, name string) error {
	val, err := json.Marshal(demoDeployment(name, 0))
	if err != nil {
		return err
	}
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, etcdKeyPrefix+name)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, val)
	var resp []byte
	return w.conns[i].Invoke(ctx, "/etcdserverpb.KV/Put", &req, &resp)
}

// keys lists the keys under prefix as the i-th member has them applied
// (a serializable KV.Range, keys only: RangeRequest{key = 1, range_end = 2,
// serializable = 7, keys_only = 8}; RangeResponse{kvs = 2}, KeyValue{key = 1}).
func (w *etcdWriter) keys(ctx context.Context, i int, prefix string) (map[string]bool, error) {
	end := []byte(prefix)
	end[len(end)-1]++
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendString(req, prefix)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, end)
	req = protowire.AppendTag(req, 7, protowire.VarintType)
	req = protowire.AppendVarint(req, 1)
	req = protowire.AppendTag(req, 8, protowire.VarintType)
	req = protowire.AppendVarint(req, 1)
	var resp []byte
	if err := w.conns[i].Invoke(ctx, "/etcdserverpb.KV/Range", &req, &resp); err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	err := eachField(resp, func(num protowire.Number, kv []byte) error {
		if num != 2 {
			return nil
		}
		return eachField(kv, func(num protowire.Number, v []byte) error {
			if num == 1 {
				keys[string(v)] = true
			}
			return nil
		})
	})
	return keys, err
}

// eachField calls f with every length-delimited field of msg and skips the others.
func eachField(msg []byte, f func(protowire.Number, []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return protowire.ParseError(n)
			}
			msg = msg[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if err := f(num, v); err != nil {
			return err
		}
		msg = msg[n:]
	}
	return nil
}

func (w *etcdWriter) close() {
	for _, cc := range w.conns {
		_ = cc.Close()
	}
}

// --- certificates ------------------------------------------------------------------

// writeCerts makes a CA and one certificate for the members (127.0.0.1, for
// serving clients and for peers both ways), ECDSA P-256 like Flotilla's, into
// ec.dir, and returns the CA certificate.
func (ec *etcdCluster) writeCerts() ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-bench-ca"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd-bench-member"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.pem":         caPEM,
		"member.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"member-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(ec.dir, name), content, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// --- as a benchCluster ------------------------------------------------------------

var _ benchCluster = (*etcdCluster)(nil)

func (ec *etcdCluster) system() string { return "etcd" }

func (ec *etcdCluster) members() []string {
	var names []string
	for _, m := range ec.nodes {
		names = append(names, m.name)
	}
	return names
}

func (ec *etcdCluster) running(k int) bool { return ec.nodes[k].running() }

func (ec *etcdCluster) dial(via []int) (writer, error) { return ec.connect(via) }

// cpu is the CPU time so far of every member, by name.
func (ec *etcdCluster) cpu() map[string]float64 {
	m := map[string]float64{}
	for _, n := range ec.nodes {
		if pid := n.pid(); pid != 0 {
			m[n.name] = cpuSeconds(pid)
		}
	}
	return m
}

func (ec *etcdCluster) kill(k int) { ec.nodes[k].kill() }

// restart starts member k again on its data dir and waits until it serves
// writes (it has a leader and applied a write of its own).
func (ec *etcdCluster) restart(b *testing.B, k int) {
	b.Helper()
	if err := ec.nodes[k].start(); err != nil {
		b.Fatal(err)
	}
	ec.waitServing(b, k)
}

// checkAcked fails b unless member k has every acknowledged write applied
// (after giving it time to apply what was committed).
func (ec *etcdCluster) checkAcked(b *testing.B, k int, acked []string) {
	b.Helper()
	w, err := ec.connect([]int{k})
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	waitUntil(b, 30*time.Second, fmt.Sprintf("%s has all %d acknowledged writes", ec.nodes[k].name, len(acked)), func(ctx context.Context) error {
		have, err := w.keys(ctx, 0, etcdKeyPrefix)
		if err != nil {
			return err
		}
		var miss []string
		for _, a := range acked {
			if !have[etcdKeyPrefix+a] {
				miss = append(miss, a)
			}
		}
		if len(miss) > 0 {
			return fmt.Errorf("%d acknowledged writes missing, e.g. %v", len(miss), miss[:min(5, len(miss))])
		}
		return nil
	})
}

func (ec *etcdCluster) labBridge() string { return "" }

// describe says what the etcd figures are of, for the table.
func (ec *etcdCluster) describe() string {
	return fmt.Sprintf("etcd %s, 3 members on 127.0.0.1; client TLS (server certificate only; no client-cert auth, etcd auth off), peer mTLS; "+
		"writers use etcd's gRPC KV.Put (protobuf over HTTP/2 + TLS, as etcd's Go client; hand-encoded, grpc-go %s)", ec.version, grpc.Version)
}
