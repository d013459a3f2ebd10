// Package node is the part of `make cluster` that tests use: it reads the
// running cluster's .cluster/env, creates and removes test "devices"
// (network namespaces with a veth port on the cluster's bridge, an address
// in DEVICE_CIDR and routes only to the pod and service ranges, so nothing
// they send can leave the machine), and reads the guard's drop counters.
// It shells out to ip(8) and nft(8) and needs root.
package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Env is .cluster/env: the facts about the running cluster that tests need.
type Env struct {
	NodeName          string
	NodeIP            string
	Bridge            string
	PodCIDR           string
	ServiceCIDR       string
	DeviceCIDR        string
	DeviceGateway     string
	ContainerdAddress string
	GuardTable        string
}

// Keys are the .cluster/env keys, in the order they are written.
var Keys = []string{"NODE_NAME", "NODE_IP", "BRIDGE", "POD_CIDR", "SERVICE_CIDR", "DEVICE_CIDR", "DEVICE_GATEWAY", "CONTAINERD_ADDRESS", "GUARD_TABLE"}

func (e Env) fields() map[string]*string {
	return map[string]*string{
		"NODE_NAME": &e.NodeName, "NODE_IP": &e.NodeIP, "BRIDGE": &e.Bridge,
		"POD_CIDR": &e.PodCIDR, "SERVICE_CIDR": &e.ServiceCIDR, "DEVICE_CIDR": &e.DeviceCIDR,
		"DEVICE_GATEWAY": &e.DeviceGateway, "CONTAINERD_ADDRESS": &e.ContainerdAddress,
		"GUARD_TABLE": &e.GuardTable,
	}
}

// Format renders the env file: one KEY=value line per key.
func (e Env) Format() string {
	f := e.fields()
	var b strings.Builder
	for _, k := range Keys {
		fmt.Fprintf(&b, "%s=%s\n", k, *f[k])
	}
	return b.String()
}

// ParseEnv reads an env file; every key must be present and non-empty.
func ParseEnv(data []byte) (Env, error) {
	var e Env
	ptrs := map[string]*string{
		"NODE_NAME": &e.NodeName, "NODE_IP": &e.NodeIP, "BRIDGE": &e.Bridge,
		"POD_CIDR": &e.PodCIDR, "SERVICE_CIDR": &e.ServiceCIDR, "DEVICE_CIDR": &e.DeviceCIDR,
		"DEVICE_GATEWAY": &e.DeviceGateway, "CONTAINERD_ADDRESS": &e.ContainerdAddress,
		"GUARD_TABLE": &e.GuardTable,
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("env: line %q is not KEY=value", line)
		}
		if p, known := ptrs[k]; known {
			*p = v
		}
	}
	for _, k := range Keys {
		if *ptrs[k] == "" {
			return Env{}, fmt.Errorf("env: %s is missing", k)
		}
	}
	return e, nil
}

// Cluster is a running cluster, found by its state directory.
type Cluster struct {
	Dir string // the state directory, .cluster in the checkout
	Env Env
}

// Load reads dir/env of a running cluster.
func Load(dir string) (*Cluster, error) {
	data, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		return nil, fmt.Errorf("no running cluster in %s (make cluster): %w", dir, err)
	}
	env, err := ParseEnv(data)
	if err != nil {
		return nil, err
	}
	return &Cluster{Dir: dir, Env: env}, nil
}

// DevicesDir holds one marker file per device namespace, so stopping the
// cluster removes the devices a test forgot.
func DevicesDir(stateDir string) string { return filepath.Join(stateDir, "devices") }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// HostVeth is the bridge side of a device's veth pair: a name that fits
// IFNAMSIZ and is the same for the same device name.
func HostVeth(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "itmd" + hex.EncodeToString(sum[:])[:10]
}

// DeviceAddress checks that addr is a host address inside DEVICE_CIDR and
// not its gateway, and returns it with the prefix length of DEVICE_CIDR.
func (e Env) DeviceAddress(addr string) (netip.Prefix, error) {
	subnet, err := netip.ParsePrefix(e.DeviceCIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("DEVICE_CIDR %q: %w", e.DeviceCIDR, err)
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(addr, fmt.Sprintf("/%d", subnet.Bits())))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("device address %q: %w", addr, err)
	}
	if !subnet.Contains(ip) || ip == subnet.Masked().Addr() || ip.String() == e.DeviceGateway {
		return netip.Prefix{}, fmt.Errorf("device address %s is not a free host address in %s (gateway %s)", ip, subnet, e.DeviceGateway)
	}
	return netip.PrefixFrom(ip, subnet.Bits()), nil
}

// DeviceCommands are the ip(8) invocations that make device name with
// address addr: a namespace, a veth pair with one end on the bridge, and
// routes only to the pod and service ranges through DEVICE_GATEWAY.
func (e Env) DeviceCommands(name string, addr netip.Prefix) [][]string {
	veth := HostVeth(name)
	in := func(args ...string) []string { return append([]string{"ip", "-n", name}, args...) }
	return [][]string{
		{"ip", "netns", "add", name},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"ip", "link", "set", veth, "master", e.Bridge, "up"},
		in("link", "set", "lo", "up"),
		in("addr", "add", addr.String(), "dev", "eth0"),
		in("link", "set", "eth0", "up"),
		in("route", "add", e.PodCIDR, "via", e.DeviceGateway, "dev", "eth0"),
		in("route", "add", e.ServiceCIDR, "via", e.DeviceGateway, "dev", "eth0"),
	}
}

// AddDevice creates the device network namespace name with address addr
// (an address in DEVICE_CIDR, with or without its prefix length). Run
// commands inside it with Exec.
func (c *Cluster) AddDevice(name, addr string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("device name %q: want lowercase letters, digits and '-', at most 31", name)
	}
	prefix, err := c.Env.DeviceAddress(addr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(DevicesDir(c.Dir), 0o755); err != nil {
		return err
	}
	// The marker comes first: a half-made device is still removed on stop.
	if err := os.WriteFile(filepath.Join(DevicesDir(c.Dir), name), []byte(prefix.String()+"\n"), 0o644); err != nil {
		return err
	}
	for _, argv := range c.Env.DeviceCommands(name, prefix) {
		if err := run(argv...); err != nil {
			_ = c.DelDevice(name)
			return fmt.Errorf("device %s: %w", name, err)
		}
	}
	return nil
}

// DelDevice removes the device namespace name and its veth. Removing a
// device that does not exist is not an error.
func (c *Cluster) DelDevice(name string) error {
	return DeleteDevice(c.Dir, name)
}

// DeleteDevice removes device name of the cluster in stateDir.
func DeleteDevice(stateDir, name string) error {
	var errs []error
	if exists("/run/netns/" + name) {
		if err := run("ip", "netns", "del", name); err != nil {
			errs = append(errs, err)
		}
	}
	if exists("/sys/class/net/" + HostVeth(name)) {
		if err := run("ip", "link", "del", HostVeth(name)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(filepath.Join(DevicesDir(stateDir), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Devices lists the device names recorded in stateDir.
func Devices(stateDir string) []string {
	entries, _ := os.ReadDir(DevicesDir(stateDir))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// Exec returns a command that runs argv inside device name's namespace.
func Exec(name string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...)
}

// ExecContext is Exec bound to ctx (the command is killed when ctx ends).
func ExecContext(ctx context.Context, name string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name}, argv...)...)
}

// GuardCounters reads the guard table's named drop counters (packets).
// Every value must stay 0: a non-zero one is a packet that tried to leave
// the machine.
func (c *Cluster) GuardCounters() (map[string]uint64, error) {
	return ReadGuardCounters(c.Env.GuardTable)
}

// ReadGuardCounters lists the counters of the nftables table inet table.
func ReadGuardCounters(table string) (map[string]uint64, error) {
	out, err := exec.Command("nft", "list", "counters", "table", "inet", table).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list counters table inet %s: %w: %s", table, err, bytes.TrimSpace(out))
	}
	return ParseCounters(string(out))
}

var counterRE = regexp.MustCompile(`counter\s+(\S+)\s*\{[^}]*?packets\s+(\d+)`)

// ParseCounters parses `nft list counters` output into name → packets.
func ParseCounters(out string) (map[string]uint64, error) {
	counts := map[string]uint64{}
	for _, m := range counterRE.FindAllStringSubmatch(out, -1) {
		n, err := strconv.ParseUint(m[2], 10, 64)
		if err != nil {
			return nil, err
		}
		counts[m[1]] = n
	}
	if len(counts) == 0 {
		return nil, errors.New("no counters in the guard table")
	}
	return counts, nil
}

func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
