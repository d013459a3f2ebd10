package node

import (
	"strings"
	"testing"
)

var env = Env{
	NodeName: "itm-node", NodeIP: "10.243.0.1", Bridge: "itmbr0", PodCIDR: "10.244.0.0/16",
	ServiceCIDR: "10.96.0.0/12", DeviceCIDR: "10.244.77.0/24", DeviceGateway: "10.244.77.1",
	ContainerdAddress: "/x/.cluster/run/containerd/containerd.sock", GuardTable: "itm_cluster_guard",
}

func TestEnvRoundTrips(t *testing.T) {
	got, err := ParseEnv([]byte(env.Format()))
	if err != nil {
		t.Fatal(err)
	}
	if got != env {
		t.Errorf("parsed %+v, want %+v", got, env)
	}
	for _, k := range Keys {
		if !strings.Contains(env.Format(), "\n"+k+"=") && !strings.HasPrefix(env.Format(), k+"=") {
			t.Errorf("env lacks %s", k)
		}
	}
}

func TestParseEnvRefusesAMissingKey(t *testing.T) {
	if _, err := ParseEnv([]byte(strings.Replace(env.Format(), "GUARD_TABLE=itm_cluster_guard\n", "", 1))); err == nil {
		t.Error("an env without GUARD_TABLE parsed")
	}
}

func TestDeviceAddressMustBeAHostInTheDeviceRange(t *testing.T) {
	for addr, ok := range map[string]bool{
		"10.244.77.5": true, "10.244.77.6/24": true,
		"10.244.77.1": false, "10.244.77.0": false, "10.244.0.5": false, "192.0.2.9": false, "nonsense": false,
	} {
		p, err := env.DeviceAddress(addr)
		if (err == nil) != ok {
			t.Errorf("%s: err %v, want ok=%v", addr, err, ok)
		}
		if ok && p.Bits() != 24 {
			t.Errorf("%s: prefix %s", addr, p)
		}
	}
}

func TestDeviceRoutesOnlyToPodAndServiceRanges(t *testing.T) {
	p, _ := env.DeviceAddress("10.244.77.5")
	var routes []string
	for _, c := range env.DeviceCommands("dev1", p) {
		s := strings.Join(c, " ")
		if strings.Contains(s, " route ") {
			routes = append(routes, s)
		}
		if strings.Contains(s, "default") {
			t.Errorf("a default route: %s", s)
		}
	}
	want := []string{
		"ip -n dev1 route add 10.244.0.0/16 via 10.244.77.1 dev eth0",
		"ip -n dev1 route add 10.96.0.0/12 via 10.244.77.1 dev eth0",
	}
	if strings.Join(routes, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes:\n%s", strings.Join(routes, "\n"))
	}
	if v := HostVeth("a-very-long-device-name-indeed"); len(v) > 15 || v != HostVeth("a-very-long-device-name-indeed") || v == HostVeth("dev2") {
		t.Errorf("host veth name %q", v)
	}
}

func TestParseCounters(t *testing.T) {
	out := `table inet itm_cluster_guard {
	counter from_bridge {
		packets 0 bytes 0
	}
	counter to_cluster_range {
		packets 3 bytes 180
	}
}`
	got, err := ParseCounters(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["from_bridge"] != 0 || got["to_cluster_range"] != 3 {
		t.Errorf("counters = %v", got)
	}
	if _, err := ParseCounters("table inet x {\n}"); err == nil {
		t.Error("a table without counters parsed")
	}
}
