// Command helmchart writes Ferry's Helm chart, deploy/helm/ferry, from the kustomize build
// of deploy/base (internal/helmchart). Run by `make helm-chart` from the repository's top
// directory; test/deploy fails while the checked-in chart differs from what it writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferryvm/ferry/internal/helmchart"
)

func main() {
	root := flag.String("root", ".", "the repository's top directory")
	out := flag.String("out", "", "the chart's directory (default: "+helmchart.Dir+" under -root)")
	flag.Parse()
	if *out == "" {
		*out = filepath.Join(*root, helmchart.Dir)
	}
	files, err := helmchart.Generate(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helmchart:", err)
		os.Exit(1)
	}
	if err := helmchart.Write(*out, files); err != nil {
		fmt.Fprintln(os.Stderr, "helmchart:", err)
		os.Exit(1)
	}
	fmt.Printf("helmchart: wrote %d files to %s\n", len(files), *out)
}
