package agent

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// fakeRoot builds a system tree: files maps paths to contents, links maps
// symlink paths to their targets, dirs lists empty directories.
func fakeRoot(t *testing.T, files, links map[string]string, dirs ...string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const mountinfo = "22 1 %s / / rw,relatime shared:1 - ext4 /dev/whatever rw\n25 22 0:5 / /dev rw - devtmpfs udev rw\n"

func TestRootEncrypted(t *testing.T) {
	ptr := func(b bool) *bool { return &b }
	tests := map[string]struct {
		files map[string]string
		links map[string]string
		dirs  []string
		want  *bool
	}{
		"LUKS directly under /": {
			files: map[string]string{
				"proc/self/mountinfo":          fmt.Sprintf(mountinfo, "253:0"),
				"sys/class/block/dm-0/dm/uuid": "CRYPT-LUKS2-0123456789abcdef-root",
			},
			links: map[string]string{"sys/dev/block/253:0": "../../devices/virtual/block/dm-0"},
			want:  ptr(true),
		},
		"LVM on LUKS": {
			files: map[string]string{
				"proc/self/mountinfo":          fmt.Sprintf(mountinfo, "253:1"),
				"sys/class/block/dm-1/dm/uuid": "LVM-abcdef",
				"sys/class/block/dm-0/dm/uuid": "CRYPT-LUKS2-0123-luks",
			},
			links: map[string]string{"sys/dev/block/253:1": "../../devices/virtual/block/dm-1"},
			dirs:  []string{"sys/class/block/dm-1/slaves/dm-0"},
			want:  ptr(true),
		},
		"plain LVM": {
			files: map[string]string{
				"proc/self/mountinfo":          fmt.Sprintf(mountinfo, "253:1"),
				"sys/class/block/dm-1/dm/uuid": "LVM-abcdef",
			},
			links: map[string]string{"sys/dev/block/253:1": "../../devices/virtual/block/dm-1"},
			dirs:  []string{"sys/class/block/dm-1/slaves/nvme0n1p3", "sys/class/block/nvme0n1p3"},
			want:  ptr(false),
		},
		"plain partition": {
			files: map[string]string{"proc/self/mountinfo": fmt.Sprintf(mountinfo, "259:2")},
			links: map[string]string{"sys/dev/block/259:2": "../../devices/pci0000:00/nvme/nvme0/nvme0n1/nvme0n1p2"},
			dirs:  []string{"sys/class/block/nvme0n1p2"},
			want:  ptr(false),
		},
		"overlay root (container) is unknown": {
			files: map[string]string{"proc/self/mountinfo": "500 400 0:52 / / rw - overlay overlay rw,lowerdir=/x\n"},
			want:  nil,
		},
		"no mountinfo is unknown": {want: nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := System{Root: fakeRoot(t, tc.files, tc.links, tc.dirs...)}.rootEncrypted()
			switch {
			case tc.want == nil && got != nil:
				t.Fatalf("got %v, want unknown", *got)
			case tc.want != nil && (got == nil || *got != *tc.want):
				t.Fatalf("got %v, want %v", got, *tc.want)
			}
		})
	}
}

func TestGather(t *testing.T) {
	root := fakeRoot(t, map[string]string{
		"etc/os-release":            "PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n",
		"proc/sys/kernel/osrelease": "6.8.0-45-generic\n",
	}, nil)
	s := System{
		Root:     root,
		Hostname: func() (string, error) { return "jdoe-laptop", nil },
		Interfaces: func() ([]netip.Addr, error) {
			return []netip.Addr{
				netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.20.0.5"), netip.MustParseAddr("fe80::1"),
				netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("::ffff:10.20.0.5"), netip.MustParseAddr("::1"),
			}, nil
		},
	}
	f := s.Gather("v1.2.3")
	if f.OSVersion != "24.04" || f.Hostname != "jdoe-laptop" || f.AgentVersion != "v1.2.3" {
		t.Errorf("facts = %+v", f)
	}
	if len(f.Addresses) != 2 || f.Addresses[0] != "10.20.0.5" || f.Addresses[1] != "2001:db8::5" {
		t.Errorf("addresses = %v, want the global unicast ones once", f.Addresses)
	}
	if f.DiskEncrypted != nil {
		t.Errorf("disk encryption = %v, want unknown", *f.DiskEncrypted)
	}
	if f.Attributes["kernel"] != "6.8.0-45-generic" {
		t.Errorf("attributes = %v", f.Attributes)
	}

	rolling := System{Root: fakeRoot(t, map[string]string{"etc/os-release": "NAME=\"Arch Linux\"\nBUILD_ID=rolling\n"}, nil)}
	if v := rolling.osVersion(); v != "" {
		t.Errorf("a distribution without VERSION_ID reported %q, want unknown", v)
	}
}
