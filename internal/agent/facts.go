// Package agent is the device side of check-ins: it gathers facts from a
// Linux system and reports them to the check-in service.
package agent

import (
	"bufio"
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/itmanager-io/itmanager/internal/checkin/wire"
)

// System is where facts come from. Root is "/" on a real device; tests point
// it at a fake tree with etc/os-release, proc/self/mountinfo and sys/.
type System struct {
	Root string
	// Hostname and Interfaces default to the running system's.
	Hostname   func() (string, error)
	Interfaces func() ([]netip.Addr, error)
}

// Gather collects what is known; anything that cannot be determined is left
// unknown (empty, or nil for DiskEncrypted), never guessed.
func (s System) Gather(agentVersion string) wire.Facts {
	f := wire.Facts{AgentVersion: agentVersion, OSVersion: s.osVersion(), DiskEncrypted: s.rootEncrypted()}
	hostname := s.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	if h, err := hostname(); err == nil {
		f.Hostname = h
	}
	ifaces := s.Interfaces
	if ifaces == nil {
		ifaces = interfaceAddrs
	}
	if addrs, err := ifaces(); err == nil {
		for _, a := range addrs {
			a = a.Unmap()
			if !a.IsGlobalUnicast() || a.IsLoopback() || slices.Contains(f.Addresses, a.String()) {
				continue
			}
			if len(f.Addresses) == 8 {
				break
			}
			f.Addresses = append(f.Addresses, a.String())
		}
	}
	f.Attributes = map[string]string{"arch": runtime.GOARCH}
	if k := s.read("proc/sys/kernel/osrelease"); k != "" {
		f.Attributes["kernel"] = k
	}
	return f
}

func (s System) path(p string) string { return filepath.Join(s.Root, p) }

func (s System) read(p string) string {
	data, err := os.ReadFile(s.path(p))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// osVersion is VERSION_ID of os-release (the form targetVersion uses, such
// as "24.04"); distributions without one report no version.
func (s System) osVersion() string {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		data, err := os.ReadFile(s.path(p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VERSION_ID="); ok {
				if uq, err := strconv.Unquote(v); err == nil {
					v = uq
				}
				return strings.Trim(v, `'"`)
			}
		}
		return ""
	}
	return ""
}

// rootEncrypted reports whether the root filesystem sits on dm-crypt (LUKS),
// directly or under LVM: true when a CRYPT- device-mapper target is beneath
// it, false when it is a plain disk partition with none, and unknown (nil)
// otherwise (overlay, tmpfs, network or pooled filesystems, no /sys).
func (s System) rootEncrypted() *bool {
	dev := s.rootDevice()
	if dev == "" {
		return nil
	}
	if _, err := os.Stat(s.path(filepath.Join("sys/class/block", dev))); err != nil {
		return nil
	}
	yes, no := true, false
	if s.cryptBeneath(dev, 0) {
		return &yes
	}
	return &no
}

// rootDevice is the kernel block device name (dm-0, nvme0n1p2) of "/".
func (s System) rootDevice() string {
	data, err := os.ReadFile(s.path("proc/self/mountinfo"))
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// 36 35 98:0 / / rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != "/" {
			continue
		}
		i := slices.Index(fields, "-")
		if i < 0 || i+2 >= len(fields) {
			return ""
		}
		major, minor, ok := strings.Cut(fields[2], ":")
		if !ok {
			return ""
		}
		// Resolve major:minor through /sys, which names the device whatever
		// /dev path (mapper alias, /dev/root) the mount table shows.
		link, err := os.Readlink(s.path(filepath.Join("sys/dev/block", major+":"+minor)))
		if err != nil {
			return ""
		}
		return filepath.Base(link)
	}
	return ""
}

func (s System) cryptBeneath(dev string, depth int) bool {
	if depth > 8 {
		return false
	}
	if strings.HasPrefix(s.read(filepath.Join("sys/class/block", dev, "dm/uuid")), "CRYPT-") {
		return true
	}
	slaves, err := os.ReadDir(s.path(filepath.Join("sys/class/block", dev, "slaves")))
	if err != nil {
		return false
	}
	for _, sl := range slaves {
		if s.cryptBeneath(sl.Name(), depth+1) {
			return true
		}
	}
	return false
}

func interfaceAddrs() ([]netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, p.Addr())
			}
		}
	}
	return out, nil
}
