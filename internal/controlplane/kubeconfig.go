package controlplane

import (
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const contextName = "ferry"

// writeKubeconfig writes a kubeconfig for server with the CA and the client
// certificate embedded.
func writeKubeconfig(path, server, user string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[contextName] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: caPEM,
	}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: certPEM,
		ClientKeyData:         keyPEM,
	}
	cfg.Contexts[contextName] = &clientcmdapi.Context{Cluster: contextName, AuthInfo: user}
	cfg.CurrentContext = contextName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFile(path, data, 0o600)
}

// ensureKubeconfig makes sure a client certificate pair named name exists in
// dir (issued once for commonName/orgs) and (re)writes a kubeconfig at path
// embedding it. The kubeconfig is rewritten on every start so the server
// address follows the current options.
func (a *authority) ensureKubeconfig(dir, name, path, server, commonName string, orgs []string) error {
	certFile, keyFile, err := a.ensurePair(dir, name, leafSpec{commonName: commonName, orgs: orgs, client: true})
	if err != nil {
		return err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	return writeKubeconfig(path, server, commonName, a.CertPEM, certPEM, keyPEM)
}

// restConfigFromFile loads a kubeconfig into a rest.Config.
func restConfigFromFile(path string) (*rest.Config, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return clientcmd.BuildConfigFromFlags("", path)
}
