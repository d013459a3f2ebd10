package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certSpec is one leaf certificate of the cluster.
type certSpec struct {
	Name   string // file name without extension under pki/
	CN     string
	Orgs   []string
	Server bool
	Client bool
	DNS    []string
	IPs    []string
}

// certSpecs are the cluster's certificates, all signed by the one CA.
func (c Config) certSpecs() []certSpec {
	return []certSpec{
		{Name: "apiserver", CN: "kube-apiserver", Server: true,
			DNS: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"},
			IPs: []string{apiServiceIP, "127.0.0.1", c.NodeIP}},
		{Name: "apiserver-kubelet-client", CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}, Client: true},
		{Name: "admin", CN: "itm-cluster-admin", Orgs: []string{"system:masters"}, Client: true},
		{Name: "kubelet", CN: "system:node:" + c.NodeName, Orgs: []string{"system:nodes"}, Client: true},
		{Name: "kubelet-serving", CN: c.NodeName, Server: true, DNS: []string{c.NodeName}, IPs: []string{c.NodeIP}},
		{Name: "kube-proxy", CN: "system:kube-proxy", Client: true},
		{Name: "controller-manager", CN: "system:kube-controller-manager", Client: true},
		{Name: "scheduler", CN: "system:kube-scheduler", Client: true},
		// kube-router gets its own identity, bound to a read-only ClusterRole.
		{Name: "kube-router", CN: "itm:kube-router", Client: true},
	}
}

// kubeconfigs maps each component kubeconfig to the certificate it uses.
var kubeconfigs = map[string]string{
	"kubeconfig.tmp":                "admin", // renamed to kubeconfig last
	"kubelet.kubeconfig":            "kubelet",
	"kube-proxy.kubeconfig":         "kube-proxy",
	"controller-manager.kubeconfig": "controller-manager",
	"scheduler.kubeconfig":          "scheduler",
	"kube-router.kubeconfig":        "kube-router",
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) }

func newCA(now time.Time) (*authority, []byte, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "itm-cluster-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		IsCA:     true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return &authority{cert: cert, key: key}, der, nil
}

// issue signs a leaf for spec and returns its DER and key.
func (a *authority) issue(spec certSpec, now time.Time) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: spec.CN, Organization: spec.Orgs},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: spec.DNS,
	}
	if spec.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if spec.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, s := range spec.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, nil, fmt.Errorf("certificate %s: bad IP %q", spec.Name, s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	return der, key, err
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writePKI creates the CA, every leaf, the service account key pair and
// the component kubeconfigs (private keys and kubeconfigs mode 0600).
func writePKI(c Config, now time.Time) error {
	dir := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(filepath.Join(dir, "kubelet"), 0o700); err != nil {
		return err
	}
	ca, caDER, err := newCA(now)
	if err != nil {
		return err
	}
	caPEM := pemCert(caDER)
	caKey, err := pemKey(ca.key.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	files := map[string][]byte{"ca.crt": caPEM, "ca.key": caKey}
	leaves := map[string][2][]byte{}
	for _, spec := range c.certSpecs() {
		der, key, err := ca.issue(spec, now)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", spec.Name, err)
		}
		keyPEM, err := pemKey(key)
		if err != nil {
			return err
		}
		files[spec.Name+".crt"], files[spec.Name+".key"] = pemCert(der), keyPEM
		leaves[spec.Name] = [2][]byte{pemCert(der), keyPEM}
	}
	sa, err := newKey()
	if err != nil {
		return err
	}
	saKey, err := pemKey(sa)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return err
	}
	files["sa.key"] = saKey
	files["sa.pub"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub})
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	for file, leaf := range kubeconfigs {
		kc := kubeconfig(c.APIServerURL(), caPEM, leaves[leaf][0], leaves[leaf][1], leaf)
		if err := clientcmd.WriteToFile(*kc, filepath.Join(c.Dir, file)); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(c.Dir, file), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func kubeconfig(server string, ca, cert, key []byte, user string) *clientcmdapi.Config {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["itm-cluster"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	kc.Contexts["itm-cluster"] = &clientcmdapi.Context{Cluster: "itm-cluster", AuthInfo: user}
	kc.CurrentContext = "itm-cluster"
	return kc
}
