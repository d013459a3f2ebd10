// Command kubectl-itm is itmanager's kubectl plugin: put it on the PATH and
// run `kubectl itm <command>`. It takes kubectl's own connection flags
// (--kubeconfig, --context, --as, --as-group, ...; k8s.io/cli-runtime's
// ConfigFlags), so it talks to the cluster kubectl would talk to, as the
// user kubectl would be.
//
//	kubectl itm why <device> <policy>   each requirement and whether the device passes it
//	kubectl itm windows                 every MaintenanceWindow and its next opening
//	kubectl itm schedule <window>       the next openings of one window
//	kubectl itm approve|deny <user>     decide an OnboardingRequest
//	kubectl itm status <user>           a person's accounts, devices and access at a glance
//	kubectl itm enroll <device>         the agent's enrolment bundle and install command
package main

import (
	"context"
	"fmt"
	"os"
	"time"
	_ "time/tzdata" // a zone unknown to this machine never falls back to UTC

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
	"github.com/itmanager-io/itmanager/internal/version"
)

// requestTimeout bounds one command's API calls unless the command waits
// on purpose (enroll --wait has its own --timeout).
const requestTimeout = 30 * time.Second

func main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	cmd := newRootCmd(streams)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(streams.ErrOut, "error:", err)
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	config    *genericclioptions.ConfigFlags
	devicesNS string
	streams   genericiooptions.IOStreams
	// now and local are the clock and zone commands compute with, and
	// newClient makes the client (tests replace them).
	now       func() time.Time
	local     *time.Location
	newClient func() (client.Client, error)
}

// client builds a client for the cluster, user and impersonation the
// kubectl flags select. Commands build it only once their arguments are
// valid, so --help and a usage error never reach the API server.
func (o *options) client() (client.Client, error) {
	if o.newClient != nil {
		return o.newClient()
	}
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "kubectl-itm/" + version.Version
	return client.New(cfg, client.Options{Scheme: newScheme()})
}

func newRootCmd(streams genericiooptions.IOStreams) *cobra.Command {
	return newRootCmdWith(&options{
		config:  genericclioptions.NewConfigFlags(true),
		streams: streams,
		now:     time.Now,
		local:   time.Local,
	})
}

func newRootCmdWith(o *options) *cobra.Command {
	streams := o.streams
	root := &cobra.Command{
		// The binary's name, so that `kubectl-itm completion bash` completes
		// the binary; help and usage show how kubectl users type it.
		Use:         "kubectl-itm",
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl itm"},
		Short:       "itmanager's kubectl plugin",
		Long: `kubectl itm explains and acts on itmanager's objects with the operator's own logic:
why an AccessPolicy allows or denies a Device, when MaintenanceWindows open,
a person's accounts, devices and access, approving or denying an
OnboardingRequest, and enrolling a Device's agent.

It takes kubectl's connection flags (--kubeconfig, --context, --as, ...), so
it reaches the cluster kubectl reaches, as the same user; the API server's
RBAC decides what it may read and do.`,
		Example: `  kubectl itm why lt-pf3x8k2q engineering-observability
  kubectl itm --context prod windows -o yaml
  kubectl itm --as it-lead approve amara.okafor "contract signed"
  kubectl itm enroll lt-pf3x8k2q --wait --bundle lt-pf3x8k2q.tar.gz`,
		Version: version.String(),
		// main prints the error, as kubectl does ("error: ..."); the usage
		// comes with a wrong argument or flag only (usageArgs, the flag
		// error func), not with an error of a command that ran.
		SilenceErrors: true,
		SilenceUsage:  true,
		// No command: the help, not an error (as kubectl does); an
		// unknown one is an error naming it.
		Args: usageArgs(cobra.NoArgs),
		Run:  func(cmd *cobra.Command, _ []string) { _ = cmd.Help() },
	}
	root.SetVersionTemplate("kubectl-itm {{.Version}}\n")
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
		return err
	})
	// Not cobra's default: it would take -v, which is kubectl's verbosity.
	root.Flags().Bool("version", false, "print the version and commit, and exit")
	flags := root.PersistentFlags()
	o.config.AddFlags(flags)
	flags.StringVar(&o.devicesNS, "devices-namespace", "itmanager-devices",
		"namespace of the agents' Leases and enrolment Secrets (as the manager's --devices-namespace)")
	registerConfigFlagCompletion(root, o)

	root.AddCommand(
		newWhyCmd(o),
		newWindowsCmd(o),
		newScheduleCmd(o),
		newApproveCmd(o),
		newDenyCmd(o),
		newStatusCmd(o),
		newEnrollCmd(o),
		newVersionCmd(o),
	)
	return root
}

// usageArgs is check, printing the command's usage to stderr when the
// arguments are wrong (cobra does not once SilenceUsage is set).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
			return err
		}
		return nil
	}
}

func newVersionCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin's version and commit",
		Example: "  kubectl itm version",
		Args:    usageArgs(cobra.NoArgs),
		Run: func(*cobra.Command, []string) {
			version.Print(o.streams.Out, "kubectl-itm")
		},
	}
}

// withClient runs f with a client and a context bounded by requestTimeout.
func (o *options) withClient(cmd *cobra.Command, f func(ctx context.Context, c client.Client) error) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
	defer cancel()
	return f(ctx, c)
}

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(itmv1.AddToScheme(s))
	return s
}
