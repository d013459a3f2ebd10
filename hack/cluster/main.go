// Command cluster is `make cluster`: a real single-node Kubernetes cluster
// on this machine, built from source (hack/control-plane.sh --node), with
// every path it owns under .cluster/ in the checkout and every packet kept
// on the machine. See ../shared/real-node/README.md for why each setting is
// what it is.
//
//	cluster up                  start from nothing; run until SIGINT/SIGTERM
//	cluster down                stop the cluster of this checkout and wait
//	cluster load IMAGE...       import podman images into its containerd
//	cluster guard               print the guard's drop counters
//	cluster netns add NAME ADDR a test device: netns + veth on the bridge
//	cluster netns del NAME
//	cluster pause-image         build the minimal pause image with podman
//
// It is a Go program rather than a script because the parts that can be
// wrong quietly (certificates and their SANs, the rendered configuration,
// what the host looked like before and what is left after) are pure
// functions with tests.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/itmanager-io/itmanager/hack/cluster/node"
)

const usage = `usage: cluster up | down | load IMAGE... | guard | netns add NAME ADDR | netns del NAME | pause-image`

func main() {
	// Children get Pdeathsig from the thread that started them: keep the
	// main goroutine on one thread so it never fires early.
	runtime.LockOSThread()
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		os.Exit(1)
	}
}

func stateDir() (string, string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/itmanager-io/itmanager\n") {
			return dir, filepath.Join(dir, ".cluster"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", errors.New("no itmanager go.mod above the working directory")
		}
		dir = parent
	}
}

func needRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root: it creates network links, routes, an nftables table and iptables rules, and runs kubelet and containerd (run it as root, e.g. sudo make cluster)", what)
	}
	return nil
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	root, dir, err := stateDir()
	if err != nil {
		return err
	}
	cfg := defaultConfig(dir)
	switch args[0] {
	case "up":
		if err := needRoot("make cluster"); err != nil {
			return err
		}
		return up(root, cfg, os.Getenv("IMG"), strings.Fields(os.Getenv("IMAGES")))
	case "down":
		return down(cfg)
	case "load":
		if err := needRoot("make cluster-load"); err != nil {
			return err
		}
		return loadImages(root, cfg, args[1:], true)
	case "guard":
		counts, err := node.ReadGuardCounters(cfg.GuardTable)
		if err != nil {
			return err
		}
		printCounters(counts)
		return nil
	case "netns":
		if err := needRoot("cluster netns"); err != nil {
			return err
		}
		c, err := node.Load(dir)
		if err != nil {
			return err
		}
		switch {
		case len(args) == 4 && args[1] == "add":
			return c.AddDevice(args[2], args[3])
		case len(args) == 3 && args[1] == "del":
			return c.DelDevice(args[2])
		}
		return errors.New(usage)
	case "pause-image":
		return buildPause(root, ownPause)
	}
	return errors.New(usage)
}

func printCounters(counts map[string]uint64) {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("guard %s %s: %d packets dropped\n", guardTable, n, counts[n])
	}
}
