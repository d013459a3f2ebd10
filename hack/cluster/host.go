package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// sysctls are the host settings the node changes: kubelet sets the first
// three, the cluster sets ip_forward (the CNI bridge plugin would too), the
// others are watched so a component that flips them shows in the check.
var sysctls = []string{
	"vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops",
	"net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
	"net.ipv6.conf.all.forwarding",
}

// fixedPaths are host paths outside the state directory that containerd,
// kubelet, the CNI plugins and ip-netns create; the ones that did not
// exist before are removed on stop.
var fixedPaths = []string{
	"/run/containerd", "/var/lib/kubelet", "/var/log/containers", "/var/log/pods",
	"/var/lib/cni", "/run/netns", "/var/run/nri", "/opt/containerd", "/opt/nri",
	"/var/lib/kube-router", "/var/lib/kube-proxy", "/etc/cni/net.d/10-itm.conflist",
}

// Snapshot is the host state the cluster may change, taken before it
// starts (saved in .cluster/host.json so a killed run can be cleaned up)
// and after it stops; the difference is what it left behind.
type Snapshot struct {
	Sysctls  map[string]string `json:"sysctls"`
	IPTables map[string]string `json:"iptables"` // "iptables"/"ip6tables" → iptables-save
	NFT      string            `json:"nft"`
	// NFTChains are "family table chain" of every nftables chain.
	NFTChains []string        `json:"nftChains"`
	Links     []string        `json:"links"`
	Routes    []string        `json:"routes"`
	Mounts    []string        `json:"mounts"`
	IPSets    []string        `json:"ipsets"`
	Netns     []string        `json:"netns"`
	Paths     map[string]bool `json:"paths"`
	Cgroups   []string        `json:"cgroups"`
}

func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return string(out), fmt.Errorf("%s %s: %w %s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out), nil
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// takeSnapshot reads the host state. Errors of single readers are kept in
// the snapshot as text, so a missing tool still shows in the diff.
func takeSnapshot() Snapshot {
	s := Snapshot{Sysctls: map[string]string{}, IPTables: map[string]string{}, Paths: map[string]bool{}}
	for _, k := range sysctls {
		data, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
		if err == nil {
			s.Sysctls[k] = strings.TrimSpace(string(data))
		}
	}
	for _, t := range []string{"iptables", "ip6tables"} {
		out, err := output(t + "-save")
		if err != nil {
			out = "error: " + err.Error()
		}
		s.IPTables[t] = out
	}
	s.NFT, _ = output("nft", "list", "ruleset")
	if out, err := output("nft", "-j", "list", "ruleset"); err == nil {
		s.NFTChains, _ = nftChains(out)
	}
	if out, err := output("ip", "-o", "link", "show"); err == nil {
		s.Links = linkNames(out)
	}
	for _, fam := range []string{"-4", "-6"} {
		out, _ := output("ip", fam, "route", "show", "table", "all")
		for _, l := range lines(out) {
			s.Routes = append(s.Routes, fam+" "+l)
		}
	}
	if data, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		s.Mounts = parseMountinfo(string(data))
	}
	if out, err := output("ipset", "list", "-n"); err == nil {
		s.IPSets = lines(out)
	}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			s.Netns = append(s.Netns, e.Name())
		}
	}
	for _, p := range fixedPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	s.Cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	sort.Strings(s.Links)
	sort.Strings(s.IPSets)
	return s
}

// linkNames reads the link names of `ip -o link show` output ("3: veth1@if2: ..."
// is veth1).
func linkNames(out string) []string {
	var names []string
	for _, l := range lines(out) {
		if f := strings.Fields(l); len(f) > 1 {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

// parseMountinfo returns "mountpoint fstype source" per mount.
func parseMountinfo(data string) []string {
	var out []string
	for _, l := range lines(data) {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		out = append(out, f[4]+" "+g[0]+" "+g[1])
	}
	return out
}

func mountPoint(m string) string { return strings.Fields(m)[0] }

func (s Snapshot) save(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

func loadSnapshot(path string) (Snapshot, error) {
	var s Snapshot
	data, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

var (
	chainCounters = regexp.MustCompile(`\s*\[\d+:\d+\]$`)
	nftCounters   = regexp.MustCompile(`packets \d+ bytes \d+`)
)

// normalizeIPTables drops comments and counters of iptables-save output.
func normalizeIPTables(s string) []string {
	var out []string
	for _, l := range lines(s) {
		if strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, chainCounters.ReplaceAllString(l, ""))
	}
	return out
}

func normalizeNFT(s string) []string {
	var out []string
	for _, l := range lines(s) {
		out = append(out, nftCounters.ReplaceAllString(strings.TrimSpace(l), "packets N bytes N"))
	}
	return out
}

// diffLines reports the lines added (+) and removed (-) from a to b,
// counting duplicates.
func diffLines(a, b []string) []string {
	count := map[string]int{}
	for _, l := range a {
		count[l]--
	}
	for _, l := range b {
		count[l]++
	}
	var out []string
	for _, l := range b {
		if count[l] > 0 {
			out = append(out, "+ "+l)
			count[l]--
		}
	}
	for _, l := range a {
		if count[l] < 0 {
			out = append(out, "- "+l)
			count[l]++
		}
	}
	return out
}

// Leftovers lists every difference between the host before the cluster
// started and after it stopped. Empty means the host is as it was.
func Leftovers(before, after Snapshot) []string {
	var out []string
	add := func(what string, diff []string) {
		for _, d := range diff {
			out = append(out, what+": "+d)
		}
	}
	for _, t := range []string{"iptables", "ip6tables"} {
		add(t, diffLines(normalizeIPTables(before.IPTables[t]), normalizeIPTables(after.IPTables[t])))
	}
	add("nft", diffLines(normalizeNFT(before.NFT), normalizeNFT(after.NFT)))
	add("link", diffLines(before.Links, after.Links))
	add("route", diffLines(before.Routes, after.Routes))
	add("mount", diffLines(before.Mounts, after.Mounts))
	add("ipset", diffLines(before.IPSets, after.IPSets))
	add("netns", diffLines(before.Netns, after.Netns))
	add("cgroup", diffLines(before.Cgroups, after.Cgroups))
	for _, k := range sysctls {
		if before.Sysctls[k] != after.Sysctls[k] {
			out = append(out, fmt.Sprintf("sysctl: %s was %q, is %q", k, before.Sysctls[k], after.Sysctls[k]))
		}
	}
	for _, p := range fixedPaths {
		if before.Paths[p] != after.Paths[p] {
			out = append(out, fmt.Sprintf("path: %s existed %v, exists %v", p, before.Paths[p], after.Paths[p]))
		}
	}
	return out
}

// iptablesTable is one table of iptables-save output.
type iptablesTable struct {
	chains []string            // declared chains in order
	rules  map[string][]string // chain → "-A chain ..." lines
}

func parseIPTablesSave(s string) map[string]*iptablesTable {
	tables := map[string]*iptablesTable{}
	var cur *iptablesTable
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "*"):
			cur = &iptablesTable{rules: map[string][]string{}}
			tables[l[1:]] = cur
		case cur == nil:
		case strings.HasPrefix(l, ":"):
			cur.chains = append(cur.chains, strings.Fields(l[1:])[0])
		case strings.HasPrefix(l, "-A "):
			chain := strings.Fields(l)[1]
			cur.rules[chain] = append(cur.rules[chain], l)
		}
	}
	return tables
}

// ownChain: the chains kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
// KUBE-IPTABLES-HINT), kube-proxy (KUBE-*), kube-router (KUBE-ROUTER-*,
// KUBE-POD-FW-*, KUBE-NWPLCY-*) and the CNI portmap plugin make.
func ownChain(name string) bool {
	return strings.HasPrefix(name, "KUBE-") || strings.HasPrefix(name, "CNI-HOSTPORT-") || strings.HasPrefix(name, "CNI-DN-")
}

var jumpRE = regexp.MustCompile(`\s-[jg]\s+(\S+)`)

// iptablesCleanup returns iptables-restore --noflush input that removes
// what the node added since before: rules it added to chains that existed
// before (jumps into its chains, or naming Kubernetes or kube-router),
// then its new chains (flushed first, so references between them go).
// Chains and rules that were there before are left alone, and so is
// whatever someone else added meanwhile.
func iptablesCleanup(before, after string) string {
	bt, at := parseIPTablesSave(before), parseIPTablesSave(after)
	names := make([]string, 0, len(at))
	for n := range at {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		a := at[name]
		old := map[string]bool{}
		oldRules := map[string]int{}
		if t := bt[name]; t != nil {
			for _, c := range t.chains {
				old[c] = true
			}
			for _, rs := range t.rules {
				for _, r := range rs {
					oldRules[r]++
				}
			}
		}
		var newChains []string
		for _, c := range a.chains {
			if !old[c] && ownChain(c) {
				newChains = append(newChains, c)
			}
		}
		isNew := map[string]bool{}
		for _, c := range newChains {
			isNew[c] = true
		}
		var dels []string
		for _, c := range a.chains {
			if isNew[c] {
				continue
			}
			for _, r := range a.rules[c] {
				if oldRules[r] > 0 {
					oldRules[r]--
					continue
				}
				target := ""
				if m := jumpRE.FindStringSubmatch(r); m != nil {
					target = m[1]
				}
				if isNew[target] || strings.Contains(r, "KUBE-") || strings.Contains(r, "kube-router") || strings.Contains(r, "kubernetes") {
					dels = append(dels, "-D"+strings.TrimPrefix(r, "-A"))
				}
			}
		}
		if len(dels) == 0 && len(newChains) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n", name)
		for _, d := range dels {
			b.WriteString(d + "\n")
		}
		for _, c := range newChains {
			fmt.Fprintf(&b, "-F %s\n", c)
		}
		for _, c := range newChains {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// nftChains lists "family table" of each table and "family table chain"
// of each chain in `nft -j list ruleset` output, with " rules" appended to
// chains that hold rules.
func nftChains(jsonOut string) ([]string, error) {
	var doc struct {
		Nftables []struct {
			Table *struct{ Family, Name string }         `json:"table"`
			Chain *struct{ Family, Table, Name string }  `json:"chain"`
			Rule  *struct{ Family, Table, Chain string } `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &doc); err != nil {
		return nil, err
	}
	withRules := map[string]bool{}
	for _, o := range doc.Nftables {
		if o.Rule != nil {
			withRules[o.Rule.Family+" "+o.Rule.Table+" "+o.Rule.Chain] = true
		}
	}
	var out []string
	for _, o := range doc.Nftables {
		if o.Table != nil {
			out = append(out, o.Table.Family+" "+o.Table.Name)
		}
		if o.Chain != nil {
			key := o.Chain.Family + " " + o.Chain.Table + " " + o.Chain.Name
			if withRules[key] {
				key += " rules"
			}
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out, nil
}

var iptablesNFTTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

// emptyNewChains returns the nft commands that delete the empty chains
// iptables-nft made for the node (built-in chains it creates on first
// use, which remain once the node's rules are gone), then their tables
// when those are new and empty.
func emptyNewChains(before, now []string) [][]string {
	had, hadTable := map[string]bool{}, map[string]bool{}
	for _, c := range before {
		key := strings.TrimSuffix(c, " rules")
		had[key] = true
		f := strings.Fields(key)
		hadTable[f[0]+" "+f[1]] = true
	}
	left := map[string]int{}
	var cmds [][]string
	for _, c := range now {
		f := strings.Fields(c)
		if len(f) < 3 {
			continue
		}
		table := f[0] + " " + f[1]
		deletable := len(f) == 3 && !had[c] && (f[0] == "ip" || f[0] == "ip6") && iptablesNFTTables[f[1]] && builtinChains[f[2]]
		if deletable {
			cmds = append(cmds, []string{"nft", "delete", "chain", f[0], f[1], f[2]})
		} else {
			left[table]++
		}
	}
	tables := map[string]bool{}
	for _, c := range now {
		f := strings.Fields(c)
		tables[f[0]+" "+f[1]] = true
	}
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		f := strings.Fields(t)
		if !hadTable[t] && left[t] == 0 && iptablesNFTTables[f[1]] && (f[0] == "ip" || f[0] == "ip6") {
			cmds = append(cmds, []string{"nft", "delete", "table", f[0], f[1]})
		}
	}
	return cmds
}

var builtinChains = map[string]bool{"INPUT": true, "OUTPUT": true, "FORWARD": true, "PREROUTING": true, "POSTROUTING": true}
