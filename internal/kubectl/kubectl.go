// Package kubectl embeds the upstream kubectl (k8s.io/kubectl) as the
// `ferry k` subcommand.
package kubectl

import (
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
	"k8s.io/kubectl/pkg/cmd/util"

	// Client auth plugins (exec, oidc), as in the kubectl binary.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

// NewCommand returns the `k` subcommand: the real kubectl, receiving every
// argument after `k` untouched. --kubeconfig defaults to defaultKubeconfig
// when neither the flag nor $KUBECONFIG is set.
func NewCommand(defaultKubeconfig string) *cobra.Command {
	return NewCommandWithResolver(func() string { return defaultKubeconfig })
}

// NewCommandWithResolver is NewCommand with the default kubeconfig computed
// when the command runs (e.g. after the data directory is known).
func NewCommandWithResolver(defaultKubeconfig func() string) *cobra.Command {
	return &cobra.Command{
		Use:   "k [kubectl arguments]",
		Short: "Run kubectl against the ferry cluster",
		Long: "Run kubectl against the ferry cluster. All arguments are passed to kubectl unchanged;\n" +
			"--kubeconfig defaults to ferry's admin kubeconfig unless --kubeconfig or $KUBECONFIG is set.",
		DisableFlagParsing: true,
		SilenceUsage:       true,
		SilenceErrors:      true,
		RunE: func(cmd *cobra.Command, args []string) error {
			kc := newKubectl(cmd, args, defaultKubeconfig())
			if err := cli.RunNoErrOutput(kc); err != nil {
				// Prints the error like kubectl does and exits with its code.
				util.CheckErr(err)
			}
			return nil
		},
	}
}

func newKubectl(parent *cobra.Command, args []string, defaultKubeconfig string) *cobra.Command {
	// kubectl parses -v itself only after building the command; set the
	// verbosity early like the kubectl binary does.
	_, _ = logs.GlogSetter(kubectlcmd.GetLogVerbosity(append([]string{"kubectl"}, args...)))

	streams := genericiooptions.IOStreams{
		In:     parent.InOrStdin(),
		Out:    parent.OutOrStdout(),
		ErrOut: parent.ErrOrStderr(),
	}
	configFlags := genericclioptions.NewConfigFlags(true).
		WithDeprecatedPasswordFlag().
		WithDiscoveryBurst(300).
		WithDiscoveryQPS(50.0).
		WithWarningPrinter(streams)
	if defaultKubeconfig != "" && os.Getenv("KUBECONFIG") == "" {
		// Exported through the environment rather than as the flag's default
		// value: `kubectl config` has its own --kubeconfig flag, and plugins
		// exec'd by kubectl should target the same cluster. An explicit
		// --kubeconfig still overrides it.
		_ = os.Setenv("KUBECONFIG", defaultKubeconfig)
	}
	kc := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
		PluginHandler: kubectlcmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     append([]string{"kubectl"}, args...),
		ConfigFlags:   configFlags,
		IOStreams:     streams,
	})
	if args == nil {
		args = []string{}
	}
	kc.SetArgs(args)
	kc.SetIn(streams.In)
	kc.SetOut(streams.Out)
	kc.SetErr(streams.ErrOut)
	return kc
}
