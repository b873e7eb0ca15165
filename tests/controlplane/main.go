// Command ft-controlplane is the test control plane of finetune-operator: real upstream
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes v1.34.3,
// etcd v3.6.4) built from their Go modules into one binary.
//
// Subcommands:
//
//	ft-controlplane up --data-dir DIR [--port N] [--kubeconfig PATH]
//	    generates a CA and certificates, starts embedded etcd in this process and the
//	    three Kubernetes components as child processes (this binary re-executed with
//	    one of the subcommands below), all on 127.0.0.1, waits for /readyz, writes
//	    an admin kubeconfig and prints "KUBECONFIG=<path>". SIGINT/SIGTERM tears
//	    everything down. Logs go to DIR/logs/<component>.log.
//	ft-controlplane kube-apiserver|kube-controller-manager|kube-scheduler [flags...]
//	    runs that component exactly like its upstream binary.
//	ft-controlplane version
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	_ "time/tzdata" // CronJob time zones

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/component-base/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const (
	serviceCIDR     = "10.96.0.0/16"
	serviceIP       = "10.96.0.1"
	saIssuer        = "https://kubernetes.default.svc.cluster.local"
	componentBanner = "ft-controlplane"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	sub, args := os.Args[1], os.Args[2:]
	switch sub {
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "up":
		if err := up(args); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", componentBanner, err)
			os.Exit(1)
		}
	case "version":
		v := version.Get()
		fmt.Printf("kubernetes %s (go %s)\n", v.GitVersion, v.GoVersion)
	default:
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s up --data-dir DIR [--port N] [--kubeconfig PATH]\n"+
		"       %s kube-apiserver|kube-controller-manager|kube-scheduler [flags]\n"+
		"       %s version\n", componentBanner, componentBanner, componentBanner)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" "+componentBanner+": "+format+"\n", a...)
}

// ---------------------------------------------------------------------------------------
// up

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data, certificates, kubeconfigs and logs (required)")
	port := fs.Int("port", 0, "kube-apiserver secure port on 127.0.0.1 (0: pick a free port)")
	kubeconfigOut := fs.String("kubeconfig", "", "where to write the admin kubeconfig (default DATA/admin.kubeconfig)")
	verbosity := fs.Int("v", 0, "klog verbosity of the Kubernetes components")
	_ = fs.Parse(args)
	if *dataDir == "" {
		return errors.New("--data-dir is required")
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	pki := filepath.Join(dir, "pki")
	logs := filepath.Join(dir, "logs")
	for _, d := range []string{dir, pki, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if *kubeconfigOut == "" {
		*kubeconfigOut = filepath.Join(dir, "admin.kubeconfig")
	}
	_ = os.Remove(filepath.Join(dir, "ready.json"))

	start := time.Now()
	apiPort := *port
	if apiPort == 0 {
		if apiPort, err = freePort(); err != nil {
			return err
		}
	}
	etcdClientPort, err := freePort()
	if err != nil {
		return err
	}
	etcdPeerPort, err := freePort()
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	// --- certificates and kubeconfigs
	ca, err := newCA(pki)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	if err := ca.issue(pki, "apiserver", "kube-apiserver", nil, true,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceIP), net.IPv6loopback}); err != nil {
		return err
	}
	kubeconfigs := map[string]struct{ cn, org, path string }{
		"admin":                   {"kubernetes-admin", "system:masters", *kubeconfigOut},
		"kube-controller-manager": {"system:kube-controller-manager", "", filepath.Join(dir, "controller-manager.kubeconfig")},
		"kube-scheduler":          {"system:kube-scheduler", "", filepath.Join(dir, "scheduler.kubeconfig")},
	}
	for name, k := range kubeconfigs {
		var orgs []string
		if k.org != "" {
			orgs = []string{k.org}
		}
		if err := ca.issue(pki, name, k.cn, orgs, false, nil, nil); err != nil {
			return err
		}
		if err := writeKubeconfig(k.path, server, pki, name); err != nil {
			return err
		}
	}
	if err := writeSAKey(pki); err != nil {
		return err
	}
	logf("certificates and kubeconfigs ready in %s", time.Since(start).Round(time.Millisecond))

	// --- etcd (in this process)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClientPort)
	etcd, err := startEtcd(filepath.Join(dir, "etcd"), filepath.Join(logs, "etcd.log"), etcdClientPort, etcdPeerPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	logf("etcd ready at %s (%s)", etcdURL, time.Since(start).Round(time.Millisecond))

	self, err := os.Executable()
	if err != nil {
		return err
	}
	v := fmt.Sprintf("--v=%d", *verbosity)
	var children []*child
	stopAll := func() {
		for i := len(children) - 1; i >= 0; i-- {
			stopChild(children[i], 10*time.Second)
		}
	}
	defer stopAll()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	api, err := startChild(self, "kube-apiserver", filepath.Join(logs, "kube-apiserver.log"), []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=" + saIssuer,
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allow-privileged=true",
		"--profiling=false",
		"--endpoint-reconciler-type=none", // 127.0.0.1 is not a valid Endpoints address
		v,
	})
	if err != nil {
		return err
	}
	children = append(children, api)

	if err := waitReady(server, pki, api, sigs, 90*time.Second); err != nil {
		return fmt.Errorf("kube-apiserver: %w (see %s)", err, filepath.Join(logs, "kube-apiserver.log"))
	}
	logf("kube-apiserver ready at %s (%s)", server, time.Since(start).Round(time.Millisecond))

	kcmKubeconfig := kubeconfigs["kube-controller-manager"].path
	kcm, err := startChild(self, "kube-controller-manager", filepath.Join(logs, "kube-controller-manager.log"), []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa.key"),
		"--root-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--cluster-signing-cert-file=" + filepath.Join(pki, "ca.crt"),
		"--cluster-signing-key-file=" + filepath.Join(pki, "ca.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allocate-node-cidrs=false",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
		v,
	})
	if err != nil {
		return err
	}
	children = append(children, kcm)

	sched, err := startChild(self, "kube-scheduler", filepath.Join(logs, "kube-scheduler.log"), []string{
		"--kubeconfig=" + kubeconfigs["kube-scheduler"].path,
		"--secure-port=0",
		"--leader-elect=false",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
		v,
	})
	if err != nil {
		return err
	}
	children = append(children, sched)

	ready := map[string]any{
		"kubeconfig":        *kubeconfigOut,
		"server":            server,
		"etcd":              etcdURL,
		"pid":               os.Getpid(),
		"logs":              logs,
		"pki":               pki,
		"kubernetesVersion": version.Get().GitVersion,
		"startSeconds":      time.Since(start).Seconds(),
	}
	b, _ := json.MarshalIndent(ready, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "ready.json"), b, 0o600); err != nil {
		return err
	}
	logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
	fmt.Printf("KUBECONFIG=%s\n", *kubeconfigOut)

	// Run until signalled or until a component dies.
	dead := make(chan *child, len(children))
	for _, c := range children {
		go func(c *child) { <-c.done; dead <- c }(c)
	}
	select {
	case s := <-sigs:
		logf("received %s, shutting down", s)
		stopAll()
		return nil
	case c := <-dead:
		stopAll()
		return fmt.Errorf("%s exited unexpectedly: %v (see %s)", c.name, c.err, filepath.Join(logs, c.name+".log"))
	case err := <-etcd.Err():
		stopAll()
		return fmt.Errorf("etcd failed: %w", err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dataDir, logFile string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "default"
	cfg.Dir = dataDir
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = "default=" + pu.String()
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{logFile}
	cfg.UnsafeNoFsync = true // test data only: durability is not needed, speed is
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	cfg.QuotaBackendBytes = 2 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return nil, errors.New("etcd did not become ready within 60s")
	}
}

func startChild(self, name, logFile string, args []string) (*child, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Children die with us even if we are SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	logf("started %s (pid %d), log %s", name, cmd.Process.Pid, logFile)
	return c, nil
}

var stopOnce sync.Map

func stopChild(c *child, grace time.Duration) {
	if _, loaded := stopOnce.LoadOrStore(c, true); loaded {
		<-c.done
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func waitReady(server, pki string, api *child, sigs chan os.Signal, timeout time.Duration) error {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := client.Get(server + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-api.done:
			return fmt.Errorf("exited: %v", api.err)
		case s := <-sigs:
			sigs <- s
			return fmt.Errorf("interrupted by %s", s)
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("/readyz not ok after %s: %s", timeout, last)
}

// ---------------------------------------------------------------------------------------
// PKI: one self-signed ECDSA P-256 CA; serving and client certificates signed by it.

type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func newCA(dir string) (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "finetune-operator-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, "ca.key"), key); err != nil {
		return nil, err
	}
	return &certAuthority{cert: cert, key: key}, nil
}

func (ca *certAuthority) issue(dir, name, cn string, orgs []string, server bool, dns []string, ips []net.IP) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

func writeSAKey(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), key); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub)
}

func writeKubeconfig(path, server, pki, name string) error {
	read := func(p string) (string, error) {
		b, err := os.ReadFile(p)
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err := read(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return err
	}
	crt, err := read(filepath.Join(pki, name+".crt"))
	if err != nil {
		return err
	}
	key, err := read(filepath.Join(pki, name+".key"))
	if err != nil {
		return err
	}
	// JSON is valid YAML; kubectl and client libraries accept it as a kubeconfig.
	cfg := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"current-context": "ft-test",
		"clusters": []any{map[string]any{"name": "ft-test", "cluster": map[string]any{
			"server": server, "certificate-authority-data": ca}}},
		"users": []any{map[string]any{"name": name, "user": map[string]any{
			"client-certificate-data": crt, "client-key-data": key}}},
		"contexts": []any{map[string]any{"name": "ft-test", "context": map[string]any{
			"cluster": "ft-test", "user": name, "namespace": "default"}}},
		"preferences": map[string]any{},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

