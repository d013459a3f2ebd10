package main

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// completeNames completes the command's positional arguments with the
// names of live objects: the first argument from the first list kind, the
// second from the second, and so on; nothing past them. It reads with the
// kubectl flags already on the command line (--context, --as, ...), and an
// error (no cluster, no permission) completes nothing rather than failing.
func completeNames(o *options, kinds ...client.ObjectList) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= len(kinds) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		list, ok := kinds[len(args)].DeepCopyObject().(client.ObjectList)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return listNames(cmd.Context(), o, list, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func listNames(ctx context.Context, o *options, list client.ObjectList, prefix string) []string {
	c, err := o.client()
	if err != nil {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := c.List(ctx, list); err != nil {
		return nil
	}
	var names []string
	_ = meta.EachListItem(list, func(obj runtime.Object) error {
		if m, err := meta.Accessor(obj); err == nil && strings.HasPrefix(m.GetName(), prefix) {
			names = append(names, m.GetName())
		}
		return nil
	})
	slices.Sort(names)
	return names
}

// registerConfigFlagCompletion completes kubectl's --context, --cluster
// and --user from the kubeconfig, and --namespace and
// --devices-namespace from the cluster, as kubectl does.
func registerConfigFlagCompletion(root *cobra.Command, o *options) {
	fromConfig := func(kind string) cobra.CompletionFunc {
		return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			raw, err := o.config.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			switch kind {
			case "context":
				for n := range raw.Contexts {
					names = append(names, n)
				}
			case "cluster":
				for n := range raw.Clusters {
					names = append(names, n)
				}
			case "user":
				for n := range raw.AuthInfos {
					names = append(names, n)
				}
			}
			names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, toComplete) })
			slices.Sort(names)
			return names, cobra.ShellCompDirectiveNoFileComp
		}
	}
	for _, kind := range []string{"context", "cluster", "user"} {
		_ = root.RegisterFlagCompletionFunc(kind, fromConfig(kind))
	}
	namespaces := func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return listNames(cmd.Context(), o, &corev1.NamespaceList{}, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	_ = root.RegisterFlagCompletionFunc("namespace", namespaces)
	_ = root.RegisterFlagCompletionFunc("devices-namespace", namespaces)
}
