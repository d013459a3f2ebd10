package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"
)

// Output formats of the read commands: table (kubectl's layout, the
// default), json and yaml (the documented report structures in
// reports.go, the same fields in both).
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// addOutputFlag adds -o/--output with the formats given (the first is
// the default) and completes them.
func addOutputFlag(cmd *cobra.Command, target *string, formats ...string) {
	*target = formats[0]
	cmd.Flags().StringVarP(target, "output", "o", formats[0], "output format: one of "+strings.Join(formats, "|"))
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return formats, cobra.ShellCompDirectiveNoFileComp
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		ok := false
		for _, f := range formats {
			ok = ok || *target == f
		}
		if !ok {
			return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: %s", *target, strings.Join(formats, ","))
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// printStructured writes v as indented JSON or as YAML.
func printStructured(out io.Writer, format string, v any) error {
	data, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if format == outputYAML {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
		_, err = out.Write(data)
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", data)
	return err
}

// table is a column writer: Flush lays the cells out.
type table interface {
	io.Writer
	Flush() error
}

// newTable is kubectl's own table writer (k8s.io/cli-runtime/pkg/printers:
// minimum width 6, padding 3), as `kubectl get` lays out its columns.
func newTable(out io.Writer) table { return printers.GetNewTabWriter(out) }

// newDescribe is the layout of `kubectl describe`'s sections (padding 2),
// for the explanations of why and status.
func newDescribe(out io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(out, 0, 8, 2, ' ', 0) }
