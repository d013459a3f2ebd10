package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestPKIIssuesEveryIdentityFromOneCA(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig(dir)
	if err := writePKI(cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, "pki", "ca.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	api := readCert(t, filepath.Join(dir, "pki", "apiserver.crt"))
	var ips []string
	for _, ip := range api.IPAddresses {
		ips = append(ips, ip.String())
	}
	for _, want := range []string{apiServiceIP, "127.0.0.1", nodeIP} {
		if !slices.Contains(ips, want) {
			t.Errorf("apiserver certificate IP SANs %v lack %s", ips, want)
		}
	}
	if !slices.Contains(api.DNSNames, "kubernetes.default.svc.cluster.local") {
		t.Errorf("apiserver DNS SANs %v", api.DNSNames)
	}
	if _, err := api.Verify(x509.VerifyOptions{Roots: pool, DNSName: nodeIP, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("apiserver certificate does not verify for the node address: %v", err)
	}

	identities := map[string][2]string{
		"admin":              {"itm-cluster-admin", "system:masters"},
		"kubelet":            {"system:node:" + nodeName, "system:nodes"},
		"kube-proxy":         {"system:kube-proxy", ""},
		"controller-manager": {"system:kube-controller-manager", ""},
		"scheduler":          {"system:kube-scheduler", ""},
		"kube-router":        {"itm:kube-router", ""},
	}
	for name, id := range identities {
		c := readCert(t, filepath.Join(dir, "pki", name+".crt"))
		if c.Subject.CommonName != id[0] || (id[1] != "" && !slices.Contains(c.Subject.Organization, id[1])) {
			t.Errorf("%s: subject %v, want CN %s O %s", name, c.Subject, id[0], id[1])
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: not a client certificate of the CA: %v", name, err)
		}
	}
	if kr := readCert(t, filepath.Join(dir, "pki", "kube-router.crt")); slices.Contains(kr.Subject.Organization, "system:masters") {
		t.Error("kube-router is a cluster admin")
	}
	serving := readCert(t, filepath.Join(dir, "pki", "kubelet-serving.crt"))
	if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: nodeIP, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("kubelet serving certificate: %v", err)
	}
}

func TestPKIKeepsKeysAndKubeconfigsPrivate(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig(dir)
	if err := writePKI(cfg, time.Now()); err != nil {
		t.Fatal(err)
	}
	keys, _ := filepath.Glob(filepath.Join(dir, "pki", "*.key"))
	kcs, _ := filepath.Glob(filepath.Join(dir, "*kubeconfig*"))
	if len(keys) < 10 || len(kcs) != len(kubeconfigs) {
		t.Fatalf("keys %d, kubeconfigs %d", len(keys), len(kcs))
	}
	for _, f := range append(keys, kcs...) {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	kc, err := clientcmd.LoadFromFile(filepath.Join(dir, "kubeconfig.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if got := kc.Clusters[kc.Contexts[kc.CurrentContext].Cluster].Server; got != "https://"+nodeIP+":6443" {
		t.Errorf("admin kubeconfig server %s", got)
	}
}
