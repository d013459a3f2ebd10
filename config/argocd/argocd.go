// Package argocd holds the Argo CD health checks of itmanager's kinds, in
// Argo CD's resource_customizations layout (itmanager.io/<Kind>/health.lua,
// with testdata/ fixtures and health_test.yaml beside each), and runs them
// as Argo CD does, so tests can check them against real objects. The
// scripts are written by `make manifests` (hack/argocdgen) from the one
// template health.lua.tmpl, since Argo CD runs each alone.
package argocd

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Group is the API group of every kind here.
const Group = "itmanager.io"

// Kinds are the kinds with a health check, in the order the docs list them.
var Kinds = []string{"Device", "AccessPolicy", "OnboardingRequest", "AccountProvider", "MaintenanceWindow"}

//go:embed itmanager.io/*/health.lua itmanager.io/*/health_test.yaml itmanager.io/*/testdata/*.yaml
var files embed.FS

// Files are the health checks and their fixtures, rooted where Argo CD's
// resource_customizations directory is.
func Files() fs.FS { return files }

// Script is the health.lua of kind.
func Script(kind string) (string, error) {
	b, err := files.ReadFile(Group + "/" + kind + "/health.lua")
	return string(b), err
}

// Health is what a health script returns (Argo CD's HealthStatus).
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// The health statuses Argo CD accepts from a script; any other becomes
// Unknown.
var validStatus = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

// Run runs script on obj the way Argo CD runs a health script configured in
// argocd-cm (util/lua in Argo CD): no standard libraries but package, base
// and table, the object as the global obj, one second to finish, and the
// returned table read as {status, message}. (Argo CD also offers a reduced
// os library; these scripts do not use it, so it is not opened.)
func Run(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", l.Get(-1).Type())
	}
	h := Health{Status: lua.LVAsString(ret.RawGetString("status")), Message: lua.LVAsString(ret.RawGetString("message"))}
	if !validStatus[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

// RunKind runs kind's health.lua on obj.
func RunKind(kind string, obj map[string]any) (Health, error) {
	script, err := Script(kind)
	if err != nil {
		return Health{}, err
	}
	return Run(script, obj)
}

// toLua converts a decoded JSON (or unstructured) value as Argo CD does:
// numbers of every Go type become Lua numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case json.Number:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(toLua(l, e))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetH(lua.LString(k), toLua(l, e))
		}
		return t
	}
	return lua.LNil
}

// ConfigMapSnippet is the data of argocd-cm that installs every health
// check (resource.customizations.health.<group>_<kind>), as docs/gitops.md
// shows it.
func ConfigMapSnippet() (string, error) {
	var b strings.Builder
	b.WriteString("data:\n")
	for _, kind := range Kinds {
		script, err := Script(kind)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  resource.customizations.health.%s_%s: |\n", Group, kind)
		for _, line := range strings.SplitAfter(strings.TrimRight(script, "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				b.WriteString("\n")
				continue
			}
			b.WriteString("    " + line)
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}
