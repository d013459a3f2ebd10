package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	itmv1 "github.com/itmanager-io/itmanager/api/v1alpha1"
)

// scheduleOpenings is how many openings kubectl itm schedule lists by
// default.
const scheduleOpenings = 10

func newWhyCmd(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "why DEVICE POLICY",
		Short: "Explain whether an AccessPolicy allows a Device, requirement by requirement",
		Long: `Explain an AccessPolicy's verdict on one Device with the operator's own logic:
whether the policy's subjects select the device, each posture requirement
(check-in age from the agent's Lease, or status.lastCheckIn when you may not
read Leases), and the addresses it would allow.`,
		Example: `  kubectl itm why lt-pf3x8k2q engineering-observability
  kubectl itm why lt-pf3x8k2q engineering-observability -o json | jq -r .verdict`,
		Args:              usageArgs(cobra.ExactArgs(2)),
		ValidArgsFunction: completeNames(o, &itmv1.DeviceList{}, &itmv1.AccessPolicyList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				rep, err := whyReport(ctx, c, o.devicesNS, args[0], args[1], o.now())
				if err != nil {
					return err
				}
				if output != outputTable {
					return printStructured(o.streams.Out, output, rep)
				}
				return printWhy(rep, o.streams.Out)
			})
		},
	}
	addOutputFlag(cmd, &output, outputTable, outputJSON, outputYAML)
	return cmd
}

func newWindowsCmd(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "windows",
		Short: "List MaintenanceWindows: open now?, next opening (window zone, local, UTC), progress",
		Example: `  kubectl itm windows
  kubectl itm windows -o yaml`,
		Args:              usageArgs(cobra.NoArgs),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				rep, err := windowsReport(ctx, c, o.now())
				if err != nil {
					return err
				}
				if output != outputTable {
					return printStructured(o.streams.Out, output, rep)
				}
				return printWindows(rep, o.local, o.streams.Out)
			})
		},
	}
	addOutputFlag(cmd, &output, outputTable, outputJSON, outputYAML)
	return cmd
}

func newScheduleCmd(o *options) *cobra.Command {
	var output string
	n := scheduleOpenings
	cmd := &cobra.Command{
		Use:   "schedule WINDOW",
		Short: "List the next openings of a MaintenanceWindow, blackouts marked",
		Example: `  kubectl itm schedule ring1-weekly-berlin
  kubectl itm schedule ring1-weekly-berlin --count 3 -o json`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeNames(o, &itmv1.MaintenanceWindowList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				rep, s, err := scheduleReport(ctx, c, args[0], n, o.now())
				if err != nil {
					return err
				}
				if output != outputTable {
					return printStructured(o.streams.Out, output, rep)
				}
				return printSchedule(rep, s.Loc, n, o.local, o.streams.Out)
			})
		},
	}
	cmd.Flags().IntVar(&n, "count", scheduleOpenings, "how many openings to list")
	addOutputFlag(cmd, &output, outputTable, outputJSON, outputYAML)
	return cmd
}

func newApproveCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "approve USER [MESSAGE]",
		Short: "Approve an OnboardingRequest, as it is shown",
		Long: `Approve an OnboardingRequest: print what is approved (person, groups,
providers, devices, dates, generation) and approve exactly that version. It
needs the verb "approve" on onboardingrequests, may not be your own request,
and fails, deciding nothing, if the request changed after it was shown.`,
		Example: `  kubectl itm approve amara.okafor "contract signed"
  kubectl itm --as it-lead approve amara.okafor`,
		Args:              usageArgs(cobra.RangeArgs(1, 2)),
		ValidArgsFunction: completeNames(o, &itmv1.OnboardingRequestList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				return decide(ctx, c, args[0], itmv1.OnboardingConditionApproved, "Approved", strings.Join(args[1:], " "), o.now(), o.streams.Out)
			})
		},
	}
}

func newDenyCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "deny USER REASON [MESSAGE]",
		Short: "Deny an OnboardingRequest, as it is shown, with a reason",
		Long: `Deny an OnboardingRequest the way approve approves one, with a reason in
CamelCase (e.g. NoContract) and an optional message.`,
		Example:           `  kubectl itm deny amara.okafor NoContract "no signed contract yet"`,
		Args:              usageArgs(cobra.RangeArgs(2, 3)),
		ValidArgsFunction: completeNames(o, &itmv1.OnboardingRequestList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				return decide(ctx, c, args[0], itmv1.OnboardingConditionDenied, args[1], strings.Join(args[2:], " "), o.now(), o.streams.Out)
			})
		},
	}
}

func newStatusCmd(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status USER",
		Short: "Show a person's request, accounts, credentials Secret, devices and access at a glance",
		Example: `  kubectl itm status amara.okafor
  kubectl itm status amara.okafor -o yaml`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: completeNames(o, &itmv1.OnboardingRequestList{}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.withClient(cmd, func(ctx context.Context, c client.Client) error {
				now := o.now()
				rep, err := statusReport(ctx, c, o.devicesNS, args[0], now)
				if err != nil {
					return err
				}
				if output != outputTable {
					return printStructured(o.streams.Out, output, rep)
				}
				return printStatus(rep, now, o.streams.Out)
			})
		},
	}
	addOutputFlag(cmd, &output, outputTable, outputJSON, outputYAML)
	return cmd
}
