package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// uploadKinds are the names `ferry v upload` takes for the kinds with an Upload source.
var uploadKinds = map[string]string{
	"vi": v1alpha2.VirtualImageKind, "virtualimage": v1alpha2.VirtualImageKind,
	"cvi": v1alpha2.ClusterVirtualImageKind, "clustervirtualimage": v1alpha2.ClusterVirtualImageKind,
	"vd": v1alpha2.VirtualDiskKind, "virtualdisk": v1alpha2.VirtualDiskKind,
}

// uploadCommand is `ferry v upload KIND/NAME FILE`: it sends FILE to the upload URL in
// the object's status (what `curl -T FILE URL` does), trusting the kubeconfig's CA
// besides the system's (under ferry up the controller's certificate is the cluster
// CA's), and with --wait follows the object to Ready.
func uploadCommand(g *Globals) *cobra.Command {
	var (
		inCluster bool
		waitReady bool
		timeout   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "upload KIND/NAME FILE",
		Short: "Upload an image's file to a VirtualImage, ClusterVirtualImage or VirtualDisk whose dataSource.type is Upload",
		Long: "Sends FILE (qcow2, raw, ISO, vdi or vhdx) to the URL in the object's status.imageUploadURLs.external\n" +
			"(--in-cluster: .inCluster), as `curl -T FILE URL` does. KIND is vi, cvi or vd (or the kind's name).",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kindName, name, ok := strings.Cut(args[0], "/")
			kind := uploadKinds[strings.ToLower(kindName)]
			if !ok || kind == "" || name == "" {
				return fmt.Errorf("name the object as KIND/NAME, KIND one of vi, cvi, vd: not %q", args[0])
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			obj := uploadObject(kind)
			key := client.ObjectKey{Name: name}
			if kind != v1alpha2.ClusterVirtualImageKind {
				key.Namespace = g.Namespace
			}
			url, err := uploadURL(ctx, c, key, obj, inCluster)
			if err != nil {
				return err
			}
			hc, err := g.uploadClient()
			if err != nil {
				return err
			}
			answer, err := putFile(ctx, hc, url, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Out, strings.TrimSpace(answer))
			if !waitReady {
				return nil
			}
			return wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
				if err := c.Get(ctx, key, obj); err != nil {
					return false, nil
				}
				st := obj.(interface{ ImportState() *v1alpha2.ImportStatus }).ImportState()
				switch st.Phase {
				case v1alpha2.ImageReady:
					fmt.Fprintf(g.Out, "%s %s is Ready\n", kind, name)
					return true, nil
				case v1alpha2.ImageFailed:
					return false, fmt.Errorf("%s %s failed", kind, name)
				}
				return false, nil
			})
		},
	}
	cmd.Flags().BoolVar(&inCluster, "in-cluster", false, "use status.imageUploadURLs.inCluster (from a pod in the cluster)")
	cmd.Flags().BoolVar(&waitReady, "wait", false, "wait until the object is Ready")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "give up after this long")
	return cmd
}

func uploadObject(kind string) client.Object {
	switch kind {
	case v1alpha2.ClusterVirtualImageKind:
		return &v1alpha2.ClusterVirtualImage{}
	case v1alpha2.VirtualDiskKind:
		return &v1alpha2.VirtualDisk{}
	}
	return &v1alpha2.VirtualImage{}
}

// uploadURL waits for the object's upload URL to appear in its status.
func uploadURL(ctx context.Context, c client.Client, key client.ObjectKey, obj client.Object, inCluster bool) (string, error) {
	var url, last string
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, obj); err != nil {
			last = err.Error()
			return false, nil
		}
		st := obj.(interface{ ImportState() *v1alpha2.ImportStatus }).ImportState()
		if st.Phase == v1alpha2.ImageReady {
			return false, fmt.Errorf("%s is Ready already", key.Name)
		}
		if u := st.ImageUploadURLs; u != nil {
			url = u.External
			if inCluster {
				url = u.InCluster
			}
		}
		last = "no upload URL in status yet (is dataSource.type Upload?), phase " + string(st.Phase)
		return url != "", nil
	})
	if err != nil && url == "" {
		return "", fmt.Errorf("%s: %w (%s)", key.Name, err, last)
	}
	return url, err
}

// uploadClient trusts the system's CAs and the kubeconfig's.
func (g *Globals) uploadClient() (*http.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", g.Kubeconfig())
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	ca := cfg.TLSClientConfig.CAData
	if len(ca) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, err
		}
	}
	pool.AppendCertsFromPEM(ca)
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}, nil
}

// putFile PUTs the file to url and returns the server's answer.
func putFile(ctx context.Context, hc *http.Client, url, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, f)
	if err != nil {
		return "", err
	}
	req.ContentLength = fi.Size()
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("uploading %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("the upload was refused: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}
