// Command argocdgen writes the Argo CD health check of every kind,
// config/argocd/itmanager.io/<Kind>/health.lua, from the one template
// config/argocd/health.lua.tmpl. Argo CD runs each script alone (a health
// script cannot load a shared module), so the common kstatus reading is in
// every file; it is written once here. `make manifests` runs it and `make
// verify` fails when a generated script is stale. The kinds are the
// directories under config/argocd/itmanager.io (each holds its fixtures);
// the package config/argocd is not imported, since it embeds the scripts
// this writes.
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

func main() {
	if err := run("config/argocd"); err != nil {
		fmt.Fprintln(os.Stderr, "argocdgen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	tmpl, err := template.ParseFiles(filepath.Join(dir, "health.lua.tmpl"))
	if err != nil {
		return err
	}
	dirs, err := filepath.Glob(filepath.Join(dir, "itmanager.io", "*", "testdata"))
	if err != nil {
		return err
	}
	if len(dirs) == 0 {
		return fmt.Errorf("no kinds under %s/itmanager.io", dir)
	}
	for _, d := range dirs {
		kind := filepath.Base(filepath.Dir(d))
		var out bytes.Buffer
		if err := tmpl.Execute(&out, struct{ Kind string }{kind}); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		path := filepath.Join(dir, "itmanager.io", kind, "health.lua")
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, out.Bytes()) {
			continue
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
