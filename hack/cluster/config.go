package main

import (
	"bytes"
	"embed"
	"fmt"
	"path/filepath"
	"text/template"

	"github.com/itmanager-io/itmanager/hack/cluster/node"
)

// The addresses of the cluster. The node address sits on the bridge the
// cluster makes (this kernel has no dummy links), the device range is a /24 of the pod range on the bridge
// (pods route the whole pod range to their gateway, so a Pod's answer to a
// device goes back through the host), the service range is routed to the
// bridge, so nothing the host sends to a ClusterIP can take the
// default route out of the machine (it is routed onto the bridge).
const (
	nodeName      = "itm-node"
	nodeIP        = "10.243.0.1"
	bridge        = "itmbr0"
	podCIDR       = "10.244.0.0/16"
	nodePodCIDR   = "10.244.0.0/24"
	podGateway    = "10.244.0.1"
	serviceCIDR   = "10.96.0.0/12"
	apiServiceIP  = "10.96.0.1"
	deviceCIDR    = "10.244.77.0/24"
	deviceGateway = "10.244.77.1"
	guardTable    = "itm_cluster_guard"
	apiPort       = 6443

	// e2ePause is the sandbox image of make e2e-images; ownPause the one
	// this program builds when that is missing.
	e2ePause = "localhost/itmanager-e2e-pause:dev"
	ownPause = "localhost/itmanager-cluster-pause:dev"
)

// Config is everything the rendered files depend on.
type Config struct {
	Dir          string // absolute state directory (.cluster)
	NodeName     string
	NodeIP       string
	Bridge       string
	PodCIDR      string
	NodePodCIDR  string
	PodGateway   string
	ServiceCIDR  string
	DeviceCIDR   string
	DeviceGW     string
	GuardTable   string
	SandboxImage string
	Runc         string
	CNIBinDir    string
	EtcdPort     int
	EtcdPeerPort int
}

func defaultConfig(dir string) Config {
	return Config{
		Dir: dir, NodeName: nodeName, NodeIP: nodeIP, Bridge: bridge,
		PodCIDR: podCIDR, NodePodCIDR: nodePodCIDR, PodGateway: podGateway,
		ServiceCIDR: serviceCIDR, DeviceCIDR: deviceCIDR, DeviceGW: deviceGateway,
		GuardTable: guardTable, SandboxImage: e2ePause, Runc: "/usr/sbin/runc",
		CNIBinDir: "/usr/lib/cni", EtcdPort: 2479, EtcdPeerPort: 2480,
	}
}

// ContainerdSocket is containerd's own socket under the state directory.
func (c Config) ContainerdSocket() string {
	return filepath.Join(c.Dir, "run", "containerd", "containerd.sock")
}

// APIServerURL is where every component and the admin reach the API.
func (c Config) APIServerURL() string { return fmt.Sprintf("https://%s:%d", c.NodeIP, apiPort) }

// Env is the content of .cluster/env.
func (c Config) Env() node.Env {
	return node.Env{
		NodeName: c.NodeName, NodeIP: c.NodeIP, Bridge: c.Bridge, PodCIDR: c.PodCIDR,
		ServiceCIDR: c.ServiceCIDR, DeviceCIDR: c.DeviceCIDR, DeviceGateway: c.DeviceGW,
		ContainerdAddress: c.ContainerdSocket(), GuardTable: c.GuardTable,
	}
}

//go:embed templates/*
var templates embed.FS

// render fills templates/<name> with c.
func (c Config) render(name string) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").ParseFS(templates, "templates/"+name)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, name, c); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// renderedFiles maps each file under the state directory to its template.
var renderedFiles = map[string]string{
	"kubelet.yaml":              "kubelet.yaml",
	"containerd.toml":           "containerd.toml",
	"kube-proxy.yaml":           "kube-proxy.yaml",
	"cni/net.d/10-itm.conflist": "cni.conflist",
	"guard.nft":                 "guard.nft",
}

// Args of each process. Pure, so tests can read them.
func (c Config) etcdArgs() []string {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.EtcdPeerPort)
	return []string{
		"--name=itm", "--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=itm=" + peer, "--listen-metrics-urls=",
		"--unsafe-no-fsync=true", "--log-level=warn",
	}
}

func (c Config) pki(name string) string { return filepath.Join(c.Dir, "pki", name) }

func (c Config) apiserverArgs() []string {
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", c.EtcdPort),
		"--bind-address=" + c.NodeIP, fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address=" + c.NodeIP,
		"--tls-cert-file=" + c.pki("apiserver.crt"), "--tls-private-key-file=" + c.pki("apiserver.key"),
		"--client-ca-file=" + c.pki("ca.crt"),
		"--kubelet-client-certificate=" + c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + c.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + c.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.pki("sa.pub"),
		"--service-account-signing-key-file=" + c.pki("sa.key"),
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=1",
	}
}

func (c Config) controllerManagerArgs() []string {
	kc := filepath.Join(c.Dir, "controller-manager.kubeconfig")
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--secure-port=0", "--leader-elect=false", "--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.pki("sa.key"),
		"--root-ca-file=" + c.pki("ca.crt"),
		"--cluster-signing-cert-file=" + c.pki("ca.crt"),
		"--cluster-signing-key-file=" + c.pki("ca.key"),
		// The node's pod range comes from the CNI configuration.
		"--allocate-node-cidrs=false",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--cluster-name=itm",
		"--profiling=false",
		"--v=1",
	}
}

func (c Config) schedulerArgs() []string {
	kc := filepath.Join(c.Dir, "scheduler.kubeconfig")
	return []string{
		"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
		"--secure-port=0", "--leader-elect=false", "--profiling=false", "--v=1",
	}
}

func (c Config) containerdArgs() []string {
	return []string{"--config=" + filepath.Join(c.Dir, "containerd.toml")}
}

func (c Config) kubeletArgs() []string {
	return []string{
		"--config=" + filepath.Join(c.Dir, "kubelet.yaml"),
		"--kubeconfig=" + filepath.Join(c.Dir, "kubelet.kubeconfig"),
		"--root-dir=" + filepath.Join(c.Dir, "var", "lib", "kubelet"),
		"--cert-dir=" + c.pki("kubelet"),
		"--node-ip=" + c.NodeIP,
		"--hostname-override=" + c.NodeName,
		"--v=1",
	}
}

func (c Config) kubeProxyArgs() []string {
	return []string{"--config=" + filepath.Join(c.Dir, "kube-proxy.yaml"), "--v=1"}
}

// kubeRouterArgs: NetworkPolicy enforcement only (README of real-node:
// every other part of kube-router stays off).
func (c Config) kubeRouterArgs() []string {
	return []string{
		"--kubeconfig=" + filepath.Join(c.Dir, "kube-router.kubeconfig"),
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
		"--run-loadbalancer=false", "--enable-cni=false",
		"--enable-ipv4=true", "--enable-ipv6=false",
		"--service-cluster-ip-range=" + c.ServiceCIDR,
		"--health-port=0", "--metrics-port=0",
		"--hostname-override=" + c.NodeName,
		"--v=1",
	}
}
