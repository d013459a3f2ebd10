// Command kubectl-itm is itmanager's kubectl plugin: put it on the PATH and
// run `kubectl itm <command>`.
//
//	kubectl itm why <device> <policy>   each requirement and whether the device passes it
//	kubectl itm windows                 every MaintenanceWindow and its next opening
//	kubectl itm schedule <window>       the next openings of one window
//	kubectl itm approve|deny <user>     decide an OnboardingRequest
//	kubectl itm status <user>           a person's accounts, devices and access at a glance
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // a zone unknown to this machine never falls back to UTC

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/version"
)

const usage = `kubectl itm: itmanager's kubectl plugin

Usage:
  kubectl itm why <device> <policy>   explain whether an AccessPolicy allows a Device, requirement by requirement
  kubectl itm windows                 list MaintenanceWindows: open now?, next opening (window zone, local, UTC), progress
  kubectl itm schedule <window>       the next 10 openings of a MaintenanceWindow
  kubectl itm approve <user> [message]           approve an OnboardingRequest as it prints it (needs the verb "approve"; not your own;
                                                 fails, deciding nothing, if the request changed in between)
  kubectl itm deny <user> <reason> [message]     deny it the same way, with a reason (CamelCase, e.g. NoContract)
  kubectl itm status <user>           a person's request, accounts, devices and access at a glance

Flags:
`

func main() {
	fs := flag.NewFlagSet("kubectl-itm", flag.ContinueOnError)
	devicesNS := fs.String("devices-namespace", "itmanager-devices", "namespace of the agents' Leases (as the manager's --devices-namespace)")
	as := fs.String("as", "", "act as this user, as kubectl --as does (impersonation)")
	showVersion := fs.Bool("version", false, "print the version and commit, and exit")
	fs.SetOutput(os.Stderr)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	// The kubeconfig flag and KUBECONFIG are read by controller-runtime.
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		version.Print(os.Stdout, "kubectl-itm")
		return
	}
	if err := run(fs.Args(), *devicesNS, *as, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(args []string, devicesNS, as string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no command; run kubectl itm -h")
	}
	cfg, err := config.GetConfig()
	if err != nil {
		return err
	}
	cfg.Impersonate.UserName = as
	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch args[0] {
	case "why":
		if len(args) != 3 {
			return fmt.Errorf("usage: kubectl itm why <device> <policy>")
		}
		return why(ctx, c, devicesNS, args[1], args[2], time.Now(), out)
	case "windows":
		return windows(ctx, c, time.Now(), time.Local, out)
	case "schedule":
		if len(args) != 2 {
			return fmt.Errorf("usage: kubectl itm schedule <window>")
		}
		return scheduleOf(ctx, c, args[1], 10, time.Now(), time.Local, out)
	case "approve":
		if len(args) < 2 || len(args) > 3 {
			return fmt.Errorf("usage: kubectl itm approve <user> [message]")
		}
		return decide(ctx, c, args[1], itmv1.OnboardingConditionApproved, "Approved", strings.Join(args[2:], " "), time.Now(), out)
	case "deny":
		if len(args) < 3 || len(args) > 4 {
			return fmt.Errorf("usage: kubectl itm deny <user> <reason> [message]")
		}
		return decide(ctx, c, args[1], itmv1.OnboardingConditionDenied, args[2], strings.Join(args[3:], " "), time.Now(), out)
	case "status":
		if len(args) != 2 {
			return fmt.Errorf("usage: kubectl itm status <user>")
		}
		return status(ctx, c, devicesNS, args[1], time.Now(), out)
	default:
		return fmt.Errorf("unknown command %q; run kubectl itm -h", args[0])
	}
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(itmv1.AddToScheme(s))
	return s
}
