package main

import (
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestRenderedFilesKeepEveryPathUnderTheStateDirectory(t *testing.T) {
	cfg := defaultConfig("/lab/.cluster")
	for file, tmpl := range renderedFiles {
		out, err := cfg.render(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "{{") || strings.Contains(l, "<no value>") {
				t.Errorf("%s: unrendered line %q", file, l)
			}
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			l = strings.ReplaceAll(l, "unix://", "")
			// Absolute paths in the rendered files: the state directory,
			// or the host tools and files they read.
			for _, f := range strings.FieldsFunc(l, func(r rune) bool { return strings.ContainsRune(" \"=:,[]", r) }) {
				if strings.HasPrefix(f, "/") && !strings.HasPrefix(f, "/lab/.cluster/") &&
					f != "/usr/sbin/runc" && f != "/usr/lib/cni" && f != "/etc/resolv.conf" && f != "/32" {
					t.Errorf("%s: path %q outside the state directory", file, f)
				}
			}
		}
	}
}

func TestKubeletConfigHasTheVerifiedSettings(t *testing.T) {
	out, err := defaultConfig("/lab").render("kubelet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kc map[string]any
	if err := yaml.Unmarshal(out, &kc); err != nil {
		t.Fatalf("kubelet.yaml is not YAML: %v", err)
	}
	want := map[string]any{
		"failCgroupV1": false, "cgroupDriver": "cgroupfs", "maxOpenFiles": float64(20000),
		"oomScoreAdj": float64(0), "failSwapOn": false, "protectKernelDefaults": false,
		"localStorageCapacityIsolation": true, "readOnlyPort": float64(0),
		"address": nodeIP, "containerRuntimeEndpoint": "unix:///lab/run/containerd/containerd.sock",
	}
	for k, v := range want {
		if kc[k] != v {
			t.Errorf("%s = %v, want %v", k, kc[k], v)
		}
	}
	authn := kc["authentication"].(map[string]any)
	if authn["anonymous"].(map[string]any)["enabled"] != false || authn["webhook"].(map[string]any)["enabled"] != true {
		t.Errorf("kubelet authentication = %v, want webhook only", authn)
	}
}

func TestKubeProxyConfigNamesTheNodeAndKeepsDeviceSources(t *testing.T) {
	out, err := defaultConfig("/lab").render("kube-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kp map[string]any
	if err := yaml.Unmarshal(out, &kp); err != nil {
		t.Fatalf("kube-proxy.yaml is not YAML: %v", err)
	}
	// The template in ../shared/real-node has "hostnameOverride:s{{NODE}}".
	if kp["hostnameOverride"] != nodeName {
		t.Errorf("hostnameOverride = %v, want %s", kp["hostnameOverride"], nodeName)
	}
	// Device addresses are in the pod range, so their connections to a
	// ClusterIP are not masqueraded and ipBlock rules see them.
	if kp["clusterCIDR"] != podCIDR || !strings.HasPrefix(deviceCIDR, "10.244.") {
		t.Errorf("clusterCIDR = %v, want %s (which holds DEVICE_CIDR %s)", kp["clusterCIDR"], podCIDR, deviceCIDR)
	}
	ipt := kp["iptables"].(map[string]any)
	if kp["mode"] != "iptables" || ipt["localhostNodePorts"] != false || ipt["masqueradeAll"] != false {
		t.Errorf("kube-proxy mode/iptables = %v %v", kp["mode"], ipt)
	}
	ct := kp["conntrack"].(map[string]any)
	if ct["maxPerCore"] != float64(0) || ct["min"] != float64(0) {
		t.Errorf("conntrack = %v, want 0s (no sysctl writes)", ct)
	}
}

func TestCNIConfigHasNoDefaultRouteAndNoMasquerade(t *testing.T) {
	out, err := defaultConfig("/lab").render("cni.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPMasq *bool  `json:"ipMasq"`
			IPAM   struct {
				Routes []struct{ Dst string } `json:"routes"`
				Ranges [][]struct{ Subnet, Gateway string }
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(out, &conf); err != nil {
		t.Fatalf("cni.conflist is not JSON: %v", err)
	}
	br := conf.Plugins[0]
	if br.Type != "bridge" || br.Bridge != bridge || br.IPMasq == nil || *br.IPMasq {
		t.Fatalf("bridge plugin = %+v, want bridge %s with ipMasq false", br, bridge)
	}
	var dsts []string
	for _, r := range br.IPAM.Routes {
		dsts = append(dsts, r.Dst)
	}
	if got, want := strings.Join(dsts, ","), podCIDR+","+serviceCIDR+","+nodeIP+"/32"; got != want {
		t.Errorf("pod routes = %s, want %s (no default route)", got, want)
	}
	if r := br.IPAM.Ranges[0][0]; r.Subnet != nodePodCIDR || r.Gateway != podGateway {
		t.Errorf("pod range = %+v", r)
	}
}

func TestContainerdConfigPinsTheLocalSandboxImage(t *testing.T) {
	cfg := defaultConfig("/lab")
	cfg.SandboxImage = ownPause
	out, err := cfg.render("containerd.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`sandbox = "` + ownPause + `"`, `restrict_oom_score_adj = true`, `netns_mounts_under_state_dir = true`,
		`disable_apparmor = true`, `SystemdCgroup = false`, `BinaryName = "/usr/sbin/runc"`,
		`address = "/lab/run/containerd/containerd.sock"`, `conf_dir = "/lab/cni/net.d"`, `disable = true`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("containerd.toml lacks %s", want)
		}
	}
}

func TestGuardDropsClusterTrafficLeavingByAnyOtherInterface(t *testing.T) {
	out, err := defaultConfig("/lab").render("guard.nft")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{
		"table inet " + guardTable,
		"type filter hook postrouting",
		`oifname { "lo", "` + bridge + `" } accept`,
		`iifname "` + bridge + `" counter name "from_bridge" drop`,
		"ip saddr { " + podCIDR + ", " + serviceCIDR + ", " + nodeIP + ` } counter name "from_cluster_source" drop`,
		"ip daddr { " + podCIDR + ", " + serviceCIDR + ", " + nodeIP + ` } counter name "to_cluster_range" drop`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("guard lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "masquerade") {
		t.Error("guard masquerades")
	}
}

func TestAPIServerArgsEnforceNodeAuthorization(t *testing.T) {
	args := strings.Join(defaultConfig("/lab").apiserverArgs(), " ")
	for _, want := range []string{
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true",
		"--advertise-address=" + nodeIP, "--bind-address=" + nodeIP, "--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=", "--service-account-signing-key-file=/lab/pki/sa.key",
		"--kubelet-certificate-authority=/lab/pki/ca.crt",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("apiserver args lack %s", want)
		}
	}
	cm := strings.Join(defaultConfig("/lab").controllerManagerArgs(), " ")
	for _, want := range []string{"--allocate-node-cidrs=false", "--cluster-signing-cert-file=/lab/pki/ca.crt", "--controllers=*", "--use-service-account-credentials=true"} {
		if !strings.Contains(cm, want) {
			t.Errorf("controller-manager args lack %s", want)
		}
	}
}

func TestKubeRouterRunsTheFirewallOnly(t *testing.T) {
	args := strings.Join(defaultConfig("/lab").kubeRouterArgs(), " ")
	for _, want := range []string{"--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--run-loadbalancer=false", "--enable-cni=false", "--health-port=0", "--metrics-port=0", "--hostname-override=" + nodeName} {
		if !strings.Contains(args, want) {
			t.Errorf("kube-router args lack %s", want)
		}
	}
	if strings.Contains(args, "--cleanup-config") {
		t.Error("kube-router must not run --cleanup-config (it tears down proxy and routing state)")
	}
}

func TestHostNetworkInstallsTheGuardFirstAndThePodGatewayFirstOnTheBridge(t *testing.T) {
	cmds := hostNetworkCommands(defaultConfig("/lab"), "/lab/guard.nft")
	if strings.Join(cmds[0], " ") != "nft -f /lab/guard.nft" {
		t.Errorf("first command %v, want the guard", cmds[0])
	}
	var addrs []string
	for _, c := range cmds {
		if len(c) > 3 && c[1] == "addr" && c[2] == "add" {
			addrs = append(addrs, c[3])
		}
		if c[0] == "ip" && c[1] == "route" && strings.Contains(strings.Join(c, " "), "default") {
			t.Errorf("a default route: %v", c)
		}
	}
	if len(addrs) == 0 || addrs[0] != podGateway+"/24" {
		t.Errorf("bridge addresses %v: the pod gateway must come first (Debian's CNI bridge plugin)", addrs)
	}
}
