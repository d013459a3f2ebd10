// Command probe is the e2e suite's network tool inside Pods (and device
// namespaces): a tiny HTTP/TCP server and client, since Debian's static
// busybox wget crashes on these machines. Exit codes: 0 success, 1 failure
// (refused, timed out, unexpected status), 2 bad usage.
//
//	probe serve [--listen :8080,:8081]          answer every request 200 "ok <hostname>"
//	probe get <url> [--timeout 2s] [--expect 200] [--ca file]
//	                                             GET; print the status code and body
//	probe dial <host:port> [--timeout 2s]        open a TCP connection and close it
//	probe kubeapi --kubeconfig <file> --path /api/v1/namespaces/x/pods [--server url] [--expect 200]
//	                                             GET an API path with the kubeconfig's CA and
//	                                             credentials; print the status code and body
//
// Flags may come before or after the arguments. get and kubeapi succeed on
// a 2xx status, or exactly on --expect when given (e.g. 403 to prove a
// denial).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

const usage = `usage:
  probe serve [--listen :8080[,:8081...]]
  probe get <url> [--timeout 2s] [--expect <status>] [--ca <file>]
  probe dial <host:port> [--timeout 2s]
  probe kubeapi --kubeconfig <file> --path <api path> [--server <url>] [--timeout 5s] [--expect <status>]
`

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	maxBodySize = 1 << 20
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("probe "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", defaultTimeout(cmd), "Give up after this long.")
	expect := fs.Int("expect", 0, "Succeed exactly on this HTTP status (default: any 2xx).")
	switch cmd {
	case "serve":
		listen := fs.String("listen", ":8080", "Comma-separated addresses to serve on.")
		if _, ok := parse(fs, args, 0, stderr); !ok {
			return exitUsage
		}
		return serve(ctx, strings.Split(*listen, ","), stderr)
	case "get":
		ca := fs.String("ca", "", "PEM file of the CA to trust for https (default: the system's).")
		pos, ok := parse(fs, args, 1, stderr)
		if !ok {
			return exitUsage
		}
		tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
		if *ca != "" {
			pem, err := os.ReadFile(*ca)
			if err != nil {
				fmt.Fprintln(stderr, "probe:", err)
				return exitUsage
			}
			if tlsConfig.RootCAs = pool(pem); tlsConfig.RootCAs == nil {
				fmt.Fprintf(stderr, "probe: no certificate in %s\n", *ca)
				return exitUsage
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pos[0], nil)
		if err != nil {
			fmt.Fprintln(stderr, "probe:", err)
			return exitUsage
		}
		return get(req, tlsConfig, *timeout, *expect, stdout, stderr)
	case "dial":
		pos, ok := parse(fs, args, 1, stderr)
		if !ok {
			return exitUsage
		}
		return dial(ctx, pos[0], *timeout, stdout, stderr)
	case "kubeapi":
		kubeconfig := fs.String("kubeconfig", "", "Kubeconfig file (its current context's cluster and user).")
		path := fs.String("path", "/api", "API path to GET.")
		server := fs.String("server", "", "Server URL instead of the kubeconfig's (keeping its CA and credentials).")
		if _, ok := parse(fs, args, 0, stderr); !ok {
			return exitUsage
		}
		if *kubeconfig == "" || !strings.HasPrefix(*path, "/") {
			fmt.Fprintln(stderr, "probe kubeapi: --kubeconfig and an absolute --path are required")
			return exitUsage
		}
		req, tlsConfig, err := kubeRequest(ctx, *kubeconfig, *server, *path)
		if err != nil {
			fmt.Fprintln(stderr, "probe kubeapi:", err)
			return exitUsage
		}
		return get(req, tlsConfig, *timeout, *expect, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "probe: unknown command %q\n%s", cmd, usage)
		return exitUsage
	}
}

// defaultTimeout is 2s, and 5s for an API server (it may be busy).
func defaultTimeout(cmd string) time.Duration {
	if cmd == "kubeapi" {
		return 5 * time.Second
	}
	return 2 * time.Second
}

// parse parses flags wherever they stand among the arguments and wants
// exactly n arguments.
func parse(fs *flag.FlagSet, args []string, n int, stderr io.Writer) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != n {
		fmt.Fprintf(stderr, "%s: want %d argument(s), got %q\n%s", fs.Name(), n, pos, usage)
		return nil, false
	}
	return pos, true
}

// serve answers on every address until ctx ends, then exits 0.
func serve(ctx context.Context, addrs []string, stderr io.Writer) int {
	hostname, _ := os.Hostname()
	srv := &http.Server{Handler: handler(hostname), ReadHeaderTimeout: 5 * time.Second}
	errs := make(chan error, len(addrs))
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", strings.TrimSpace(addr))
		if err != nil {
			fmt.Fprintln(stderr, "probe serve:", err)
			return exitFailed
		}
		fmt.Fprintln(stderr, "probe serve: listening on", ln.Addr())
		go func() { errs <- srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		_ = srv.Close()
		return exitOK
	case err := <-errs:
		fmt.Fprintln(stderr, "probe serve:", err)
		return exitFailed
	}
}

// handler answers every request 200 "ok <hostname>".
func handler(hostname string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintf(w, "ok %s\n", hostname)
	})
}

// get sends req and prints the status code, then the body. It succeeds on
// expect, or on any 2xx when expect is 0.
func get(req *http.Request, tlsConfig *tls.Config, timeout time.Duration, expect int, stdout, stderr io.Writer) int {
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: nil, DisableKeepAlives: true},
		// A redirect is an answer to report, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "probe:", err)
		return exitFailed
	}
	defer func() { _ = resp.Body.Close() }()
	fmt.Fprintln(stdout, resp.StatusCode)
	if _, err := io.Copy(stdout, io.LimitReader(resp.Body, maxBodySize)); err != nil {
		fmt.Fprintln(stderr, "probe: reading the body:", err)
	}
	if ok := resp.StatusCode == expect || (expect == 0 && resp.StatusCode/100 == 2); !ok {
		return exitFailed
	}
	return exitOK
}

// dial opens a TCP connection to addr and closes it.
func dial(ctx context.Context, addr string, timeout time.Duration, stdout, stderr io.Writer) int {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fmt.Fprintln(stderr, "probe dial:", err)
		return exitFailed
	}
	_ = conn.Close()
	fmt.Fprintln(stdout, "connected", addr)
	return exitOK
}

// kubeconfig is what kubeapi reads of a kubeconfig file.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server                string `json:"server"`
			CertificateAuthority  string `json:"certificate-authority"`
			CertificateAuthorityD []byte `json:"certificate-authority-data"`
			InsecureSkipTLSVerify bool   `json:"insecure-skip-tls-verify"`
			TLSServerName         string `json:"tls-server-name"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token                 string `json:"token"`
			TokenFile             string `json:"tokenFile"`
			ClientCertificateData []byte `json:"client-certificate-data"`
			ClientKeyData         []byte `json:"client-key-data"`
		} `json:"user"`
	} `json:"users"`
}

// kubeRequest is a GET of path on the current context's cluster (or
// server) with its CA and its user's token or client certificate.
func kubeRequest(ctx context.Context, file, server, path string) (*http.Request, *tls.Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	var clusterName, userName string
	for _, c := range kc.Contexts {
		if c.Name == kc.CurrentContext {
			clusterName, userName = c.Context.Cluster, c.Context.User
		}
	}
	if clusterName == "" {
		return nil, nil, fmt.Errorf("%s: no current context %q", file, kc.CurrentContext)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	found := false
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		found = true
		if server == "" {
			server = c.Cluster.Server
		}
		ca := c.Cluster.CertificateAuthorityD
		if len(ca) == 0 && c.Cluster.CertificateAuthority != "" {
			if ca, err = os.ReadFile(relativeTo(file, c.Cluster.CertificateAuthority)); err != nil {
				return nil, nil, err
			}
		}
		if len(ca) > 0 {
			if tlsConfig.RootCAs = pool(ca); tlsConfig.RootCAs == nil {
				return nil, nil, fmt.Errorf("%s: cluster %q: no certificate in its CA", file, clusterName)
			}
		}
		tlsConfig.InsecureSkipVerify = c.Cluster.InsecureSkipTLSVerify
		tlsConfig.ServerName = c.Cluster.TLSServerName
	}
	if !found {
		return nil, nil, fmt.Errorf("%s: no cluster %q", file, clusterName)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		token := u.User.Token
		if token == "" && u.User.TokenFile != "" {
			data, err := os.ReadFile(relativeTo(file, u.User.TokenFile))
			if err != nil {
				return nil, nil, err
			}
			token = strings.TrimSpace(string(data))
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if len(u.User.ClientCertificateData) > 0 {
			cert, err := tls.X509KeyPair(u.User.ClientCertificateData, u.User.ClientKeyData)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: user %q: %w", file, userName, err)
			}
			tlsConfig.Certificates = []tls.Certificate{cert}
		}
	}
	return req, tlsConfig, nil
}

// relativeTo resolves a path in a kubeconfig against the file's directory.
func relativeTo(file, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(file), path)
}

// pool is the certificates in pem, nil when there are none.
func pool(pem []byte) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil
	}
	return p
}
