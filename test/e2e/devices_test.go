//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

// netnsPrefix names every network namespace (and host veth) the suite
// makes, so what an aborted run left is found and removed.
const netnsPrefix = "itme2e"

// netDevice is a test device: a network namespace with a veth port on the
// node's bridge, an address in DEVICE_CIDR and routes only to the pod and
// service ranges (every packet stays on the machine), running the real
// itmanager-agent binary with its enrolment files and a fake filesystem
// root its facts are read from.
type netDevice struct {
	// name is the Device object's name.
	name string
	// netns is the network namespace (also the host veth's name prefix).
	netns string
	ip    netip.Addr
	dir   string
	agent *exec.Cmd
	done  chan struct{}
	probe chan probeReq
}

func deviceDir(name string) string { return filepath.Join(work, "devices", name) }

func (d *netDevice) root() string      { return filepath.Join(d.dir, "root") }
func (d *netDevice) enrolment() string { return filepath.Join(d.dir, "enrolment") }

var deviceSeq atomic.Int32

// removeStaleDevices deletes the namespaces and veths an aborted run left.
func removeStaleDevices() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], netnsPrefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	links, _ := net.Interfaces()
	for _, l := range links {
		if strings.HasPrefix(l.Name, netnsPrefix) {
			_ = exec.Command("ip", "link", "del", l.Name).Run()
		}
	}
}

// deviceAddr is the index-th test address in DEVICE_CIDR (from .10 up; the
// gateway is .1).
func deviceAddr(index int32) netip.Addr {
	GinkgoHelper()
	p, err := netip.ParsePrefix(cluster["DEVICE_CIDR"])
	Expect(err).NotTo(HaveOccurred(), "DEVICE_CIDR")
	a := p.Masked().Addr().As4()
	a[3] += byte(9 + index)
	addr := netip.AddrFrom4(a)
	Expect(p.Contains(addr)).To(BeTrue())
	return addr
}

// newNetDevice makes the network namespace of a device (not yet its agent);
// everything goes when the spec ends.
func newNetDevice(name string) *netDevice {
	GinkgoHelper()
	i := deviceSeq.Add(1)
	d := &netDevice{name: name, netns: fmt.Sprintf("%s%d", netnsPrefix, i), ip: deviceAddr(i), dir: deviceDir(name)}
	Expect(os.MkdirAll(d.enrolment(), 0o700)).To(Succeed())
	host := d.netns + "h"
	bits := netip.MustParsePrefix(cluster["DEVICE_CIDR"]).Bits()
	ip("netns", "add", d.netns)
	DeferCleanup(func() {
		_ = exec.Command("ip", "netns", "del", d.netns).Run()
		_ = exec.Command("ip", "link", "del", host).Run()
	})
	ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", d.netns)
	ip("link", "set", host, "master", cluster["BRIDGE"], "up")
	in := func(args ...string) { ip(append([]string{"-n", d.netns}, args...)...) }
	in("link", "set", "lo", "up")
	in("addr", "add", fmt.Sprintf("%s/%d", d.ip, bits), "dev", "eth0")
	in("link", "set", "eth0", "up")
	// Only the pod and service ranges, through the node: no default route
	// (the device's own /24 stays on-link where the pod range contains it).
	for _, r := range []string{cluster["POD_CIDR"], cluster["SERVICE_CIDR"]} {
		in("route", "replace", r, "via", cluster["DEVICE_GATEWAY"])
	}
	d.startProber()
	return d
}

// agentDevice creates the Device (agent enabled, Linux, labels), its
// network namespace and fact root (os-release osVersion, disk encrypted as
// given), writes its enrolment files from the enrolment Secret as an
// installer would, and starts its agent with agentArgs added.
func agentDevice(name string, labels map[string]string, osVersion string, encrypted bool, agentArgs []string, mutate ...func(*itmv1.Device)) *netDevice {
	GinkgoHelper()
	dev := &itmv1.Device{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: itmv1.DeviceSpec{Class: itmv1.DeviceClassLaptop, Agent: &itmv1.AgentSpec{Enabled: true},
			OS: &itmv1.OSSpec{Family: itmv1.OSFamilyLinux}}}
	for _, m := range mutate {
		m(dev)
	}
	Expect(k8s.Create(ctx, dev)).To(Succeed())
	DeferCleanup(func() { deleteAndWait(dev) })
	d := newNetDevice(name)
	d.writeOSVersion(osVersion)
	d.setEncrypted(encrypted)
	d.enrol()
	d.start(agentArgs...)
	return d
}

// enrol writes url, token and ca.crt from the enrolment Secret.
func (d *netDevice) enrol() {
	GinkgoHelper()
	s := &corev1.Secret{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: devicesNS, Name: d.name + "-agent"}, s)).To(Succeed())
		for _, k := range []string{wire.SecretKeyURL, wire.SecretKeyToken, wire.SecretKeyCA} {
			g.Expect(s.Data).To(HaveKey(k))
		}
	}).Should(Succeed(), "the enrolment Secret %s/%s-agent", devicesNS, d.name)
	for k, v := range s.Data {
		Expect(os.WriteFile(filepath.Join(d.enrolment(), k), v, 0o600)).To(Succeed())
	}
}

// start runs the real agent in the device's network namespace.
func (d *netDevice) start(extra ...string) {
	GinkgoHelper()
	log, err := os.OpenFile(filepath.Join(work, "logs", d.name+".agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	Expect(err).NotTo(HaveOccurred())
	args := append([]string{"netns", "exec", d.netns, agentBin,
		"--enrolment-dir=" + d.enrolment(), "--state-file=" + filepath.Join(d.dir, "sequence"),
		"--root=" + d.root(), "--interval=2s", "--max-backoff=2s"}, extra...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed())
	d.agent, d.done = cmd, make(chan struct{})
	done := d.done
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(done)
	}()
	DeferCleanup(d.stop)
}

// stop stops the agent (SIGTERM) and waits for it to exit.
func (d *netDevice) stop() {
	if d.agent == nil {
		return
	}
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.agent.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.agent.Process.Kill()
		<-d.done
	}
}

func writeAtomic(path string, data []byte) {
	GinkgoHelper()
	Expect(os.MkdirAll(filepath.Dir(path), 0o755)).To(Succeed())
	Expect(os.WriteFile(path+".tmp", data, 0o644)).To(Succeed())
	Expect(os.Rename(path+".tmp", path)).To(Succeed())
}

func (d *netDevice) writeOSVersion(v string) {
	GinkgoHelper()
	writeAtomic(filepath.Join(d.root(), "etc", "os-release"), []byte("ID=e2e\nVERSION_ID=\""+v+"\"\n"))
}

// setEncrypted makes the fact root's "/" a device-mapper device dm-0 whose
// target is dm-crypt (LUKS) or plain LVM, which is what the agent reads
// (internal/agent/facts.go): /proc/self/mountinfo → /sys/dev/block/253:0 →
// /sys/class/block/dm-0/dm/uuid.
func (d *netDevice) setEncrypted(on bool) {
	GinkgoHelper()
	r := d.root()
	mountinfo := filepath.Join(r, "proc", "self", "mountinfo")
	if _, err := os.Stat(mountinfo); err != nil {
		writeAtomic(mountinfo, []byte("26 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw\n"))
		Expect(os.MkdirAll(filepath.Join(r, "sys", "dev", "block"), 0o755)).To(Succeed())
		Expect(os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(r, "sys", "dev", "block", "253:0"))).To(Succeed())
	}
	uuid := "LVM-e2eplainrootvolume"
	if on {
		uuid = "CRYPT-LUKS2-e2e0000000000000000000000000000-root"
	}
	writeAtomic(filepath.Join(r, "sys", "class", "block", "dm-0", "dm", "uuid"), []byte(uuid+"\n"))
}

type probeReq struct {
	addr    string
	timeout time.Duration
	done    chan error
}

// startProber runs a goroutine on an OS thread of its own inside the
// device's network namespace, so the suite's TCP probes leave from the
// device's address. The thread stays locked and dies with the goroutine.
func (d *netDevice) startProber() {
	GinkgoHelper()
	d.probe = make(chan probeReq)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + d.netns)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			_ = f.Close()
		}
		ready <- err
		if err != nil {
			return
		}
		for r := range d.probe {
			c, err := net.DialTimeout("tcp", r.addr, r.timeout)
			if err == nil {
				_ = c.Close()
			}
			r.done <- err
		}
	}()
	Expect(<-ready).To(Succeed(), "entering network namespace %s", d.netns)
	DeferCleanup(func() { close(d.probe) })
}

// connect opens (and closes) a TCP connection to addr from the device;
// nil means the connection was admitted. A refusal (ICMP, rate-limited by
// the kernel) and a timeout both mean blocked.
func (d *netDevice) connect(addr string, timeout time.Duration) error {
	done := make(chan error, 1)
	d.probe <- probeReq{addr: addr, timeout: timeout, done: done}
	return <-done
}

// reaches reports whether the device's TCP connection to addr is admitted.
func (d *netDevice) reaches(addr string) bool { return d.connect(addr, 300*time.Millisecond) == nil }

func updateDevice(name string, mutate func(*itmv1.Device)) {
	GinkgoHelper()
	Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d := &itmv1.Device{}
		if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
			return err
		}
		mutate(d)
		return k8s.Update(ctx, d)
	})).To(Succeed())
}

func getDevice(name string) *itmv1.Device {
	d := &itmv1.Device{}
	if err := k8s.Get(ctx, types.NamespacedName{Name: name}, d); err != nil {
		return &itmv1.Device{}
	}
	return d
}
