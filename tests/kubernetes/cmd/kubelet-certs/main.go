// Command kubelet-certs runs the kubelet's own certificate code for simulated nodes, so that
// kubecert's tests drive the signer and the embedded API with the real kubelet client instead of
// kubecert's own.
//
// Each node is wired as cmd/kubelet wires it: the TLS bootstrap of
// k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap (LoadClientConfig), the client certificate
// manager of k8s.io/kubernetes/pkg/kubelet/certificate on client-go's certificate manager with the
// kubelet's file store (kubelet-client-current.pem in the cert dir), the rotating transport
// (UpdateTransport, exit five minutes after the certificate is gone while the server answers), and,
// with -serving, the serving certificate manager fed with the node's addresses.
//
// The kubelet registers its certificate metrics once per process, so every node runs in a process
// of its own: `kubelet-certs nodes` starts one `kubelet-certs node` per simulated node and they all
// print to the same standard output, one JSON object per line and event. `kubelet-certs request`
// asks for one certificate with client-go's CSR helpers and reports whether it was issued or denied.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clientset "k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/certificate/csr"
	"k8s.io/klog/v2"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletcertificate "k8s.io/kubernetes/pkg/kubelet/certificate"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
)

const usage = `usage:
  kubelet-certs nodes   -count N -dir DIR -bootstrap-kubeconfig FILE [-prefix NAME] [-serving] [-for DURATION]
  kubelet-certs node    -name NAME -dir DIR -bootstrap-kubeconfig FILE [-serving] [-for DURATION]
  kubelet-certs request -kubeconfig FILE -signer NAME -cn CN [-org O] [-dns NAME,...] [-usages U,...] [-timeout D]`

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("%s", usage))
	}
	var err error
	switch os.Args[1] {
	case "nodes":
		err = runNodes(os.Args[2:])
	case "node":
		err = runNode(os.Args[2:])
	case "request":
		err = runRequest(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kubelet-certs:", err)
	os.Exit(1)
}

// event is one line on standard output.
type event struct {
	Time   time.Time `json:"time"`
	Node   string    `json:"node,omitempty"`
	Event  string    `json:"event"`
	Serial string    `json:"serial,omitempty"`
	// PublicKey is the SHA-256 of the certificate's SubjectPublicKeyInfo: a new key shows as a new value.
	PublicKey string    `json:"publicKeySha256,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	DNSNames  []string  `json:"dnsNames,omitempty"`
	IPs       []string  `json:"ips,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	Path      string    `json:"path,omitempty"`
	CSR       string    `json:"csr,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Message   string    `json:"message,omitempty"`
}

var stdout sync.Mutex

func emit(e event) {
	e.Time = time.Now().UTC()
	line, err := json.Marshal(e)
	if err != nil {
		fail(err)
	}
	stdout.Lock()
	defer stdout.Unlock()
	// One write per line, shorter than PIPE_BUF: lines of several processes never interleave.
	_, _ = os.Stdout.Write(append(line, '\n'))
}

// runContext ends on SIGTERM/SIGINT, or after d when d > 0.
func runContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	if d <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, func() { cancel(); stop() }
}

// nodeFlags are the flags `nodes` and `node` share.
type nodeFlags struct {
	dir           string
	bootstrapPath string
	serving       bool
	runFor        time.Duration
}

func (f *nodeFlags) register(fs *flag.FlagSet, dirUsage string) {
	fs.StringVar(&f.dir, "dir", "", dirUsage)
	fs.StringVar(&f.bootstrapPath, "bootstrap-kubeconfig", "", "bootstrap kubeconfig")
	fs.BoolVar(&f.serving, "serving", false, "also request and rotate serving certificates")
	fs.DurationVar(&f.runFor, "for", 0, "stop after this long (0: until SIGTERM)")
}

func runNodes(args []string) error {
	fs := flag.NewFlagSet("nodes", flag.ExitOnError)
	count := fs.Int("count", 1, "number of simulated nodes")
	prefix := fs.String("prefix", "kubelet-", "node name prefix; nodes are PREFIX1 … PREFIXN")
	var common nodeFlags
	common.register(fs, "directory holding one directory per node")
	_ = fs.Parse(args)
	if common.dir == "" || common.bootstrapPath == "" || *count < 1 {
		return fmt.Errorf("-dir, -bootstrap-kubeconfig and a -count of at least 1 are required")
	}
	ctx, cancel := runContext(common.runFor)
	defer cancel()
	// Pdeathsig fires when the thread that started a child exits: keep this one.
	runtime.LockOSThread()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	children := make([]*exec.Cmd, 0, *count)
	for i := 1; i <= *count; i++ {
		name := fmt.Sprintf("%s%d", *prefix, i)
		childArgs := []string{"node", "-name", name, "-dir", filepath.Join(common.dir, name),
			"-bootstrap-kubeconfig", common.bootstrapPath, fmt.Sprintf("-serving=%t", common.serving)}
		cmd := exec.Command(self, childArgs...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		// A node dies with this process, even when it is SIGKILLed (as the tests' cleanup does).
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting node %s: %w", name, err)
		}
		children = append(children, cmd)
	}
	exited := make(chan error, len(children))
	for _, c := range children {
		go func() { exited <- c.Wait() }()
	}
	select {
	case <-ctx.Done():
	case err := <-exited:
		// A node that exits on its own (the kubelet's five-minute rule) ends the run: report it.
		emit(event{Event: "node-exited", Message: fmt.Sprint(err)})
	}
	for _, c := range children {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for range children[1:] {
		<-exited
	}
	return nil
}

func runNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	name := fs.String("name", "", "node name")
	var common nodeFlags
	common.register(fs, "node directory: kubelet.conf and pki/ (the kubelet's cert dir) go here")
	_ = fs.Parse(args)
	if *name == "" || common.dir == "" || common.bootstrapPath == "" {
		return fmt.Errorf("-name, -dir and -bootstrap-kubeconfig are required")
	}
	ctx, cancel := runContext(common.runFor)
	defer cancel()
	logger := klog.Background().WithValues("node", *name)
	nodeName := types.NodeName(*name)
	kubeconfig := filepath.Join(common.dir, "kubelet.conf")
	certDir := filepath.Join(common.dir, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}

	// cmd/kubelet/app.buildKubeletClientConfig with RotateCertificates on.
	certConfig, clientConfig, err := bootstrap.LoadClientConfig(logger, kubeconfig, common.bootstrapPath, certDir)
	if err != nil {
		return err
	}
	clientManager, err := kubeletcertificate.NewKubeletClientCertificateManager(certDir, nodeName,
		clientConfig.CertData, clientConfig.KeyData, clientConfig.CertFile, clientConfig.KeyFile,
		func(current *tls.Certificate) (clientset.Interface, error) {
			config := certConfig
			if current != nil {
				config = clientConfig
			}
			return clientset.NewForConfig(config)
		})
	if err != nil {
		return err
	}
	transportConfig := restclient.AnonymousClientConfig(clientConfig)
	if _, err := kubeletcertificate.UpdateTransport(logger, wait.NeverStop, transportConfig, clientManager, 5*time.Minute); err != nil {
		return err
	}
	emit(event{Node: *name, Event: "started", Path: certDir})
	clientManager.Start()
	defer clientManager.Stop()
	managers := map[string]certificate.Manager{"client-certificate": clientManager}

	if common.serving {
		kubeClient, err := clientset.NewForConfig(transportConfig)
		if err != nil {
			return err
		}
		addresses := []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "127.0.0.1"}, {Type: v1.NodeHostName, Address: *name}}
		servingManager, err := kubeletcertificate.NewKubeletServerCertificateManager(kubeClient,
			&kubeletconfig.KubeletConfiguration{}, nodeName, func() []v1.NodeAddress { return addresses }, certDir)
		if err != nil {
			return err
		}
		servingManager.Start()
		defer servingManager.Stop()
		managers["serving-certificate"] = servingManager
	}

	// Report each certificate a manager starts to use, as the kubelet's TLS stacks would see it.
	seen := map[string]string{}
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		for kind, m := range managers {
			if cert := m.Current(); cert != nil && cert.Leaf != nil {
				serial := hex.EncodeToString(cert.Leaf.SerialNumber.Bytes())
				if seen[kind] != serial {
					seen[kind] = serial
					emit(certificateEvent(*name, kind, cert.Leaf))
				}
			}
		}
		select {
		case <-ctx.Done():
			emit(event{Node: *name, Event: "stopped"})
			return nil
		case <-ticker.C:
		}
	}
}

func certificateEvent(node, kind string, leaf *x509.Certificate) event {
	key := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	ips := make([]string, 0, len(leaf.IPAddresses))
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	return event{Node: node, Event: kind, Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()),
		PublicKey: hex.EncodeToString(key[:]), Subject: leaf.Subject.String(), DNSNames: leaf.DNSNames,
		IPs: ips, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
}

func runRequest(args []string) error {
	fs := flag.NewFlagSet("request", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the requester")
	signer := fs.String("signer", "", "spec.signerName")
	cn := fs.String("cn", "", "subject common name")
	org := fs.String("org", "", "subject organization")
	dns := fs.String("dns", "", "comma-separated DNS SANs")
	usagesFlag := fs.String("usages", "digital signature,client auth", "comma-separated key usages")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for a decision")
	_ = fs.Parse(args)
	if *kubeconfig == "" || *signer == "" || *cn == "" {
		return fmt.Errorf("-kubeconfig, -signer and -cn are required")
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	client, err := clientset.NewForConfig(config)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	template := &x509.CertificateRequest{Subject: pkix.Name{CommonName: *cn}}
	if *org != "" {
		template.Subject.Organization = []string{*org}
	}
	if *dns != "" {
		template.DNSNames = strings.Split(*dns, ",")
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	if err != nil {
		return err
	}
	var usages []certificatesv1.KeyUsage
	for _, u := range strings.Split(*usagesFlag, ",") {
		usages = append(usages, certificatesv1.KeyUsage(strings.TrimSpace(u)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	name, uid, err := csr.RequestCertificateWithContext(ctx, client, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "", *signer, nil, usages, key)
	if err != nil {
		return fmt.Errorf("creating the CSR: %w", err)
	}
	certPEM, err := csr.WaitForCertificate(ctx, client, name, uid)
	if err != nil {
		// client-go's own wording says whether the request was denied or failed.
		emit(event{Event: "refused", CSR: name, Message: err.Error()})
		if strings.Contains(err.Error(), "is denied") {
			os.Exit(3)
		}
		os.Exit(4)
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return fmt.Errorf("the certificate issued for %s: %w", name, err)
	}
	issued := certificateEvent("", "issued", certs[0])
	issued.CSR = name
	emit(issued)
	return nil
}
