package statuslock

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// exceptions are the status patches allowed without the optimistic lock, by file (under
// internal/controller) and enclosing function, with why.
var exceptions = map[string]string{
	"storage/import.go statusWriter.patch": "the storage controllers alone write an image's status, and all of a disk's but " +
		"attachedToVirtualMachines (the VM controller's, which these patches never carry: each is a merge patch of the fields " +
		"changed since the writer's last write); an import claims the object with a locked write first (statusWriter.claim)",
}

// TestStatusPatchesAreLocked fails on a Status().Patch (or SubResource("status").Patch)
// in internal/controller whose patch is not client.MergeFromWithOptions(...,
// client.MergeFromWithOptimisticLock{}) written in the call, unless it is an exception.
// A Status().Update carries the resourceVersion by itself and is not checked.
func TestStatusPatchesAreLocked(t *testing.T) {
	root := ".."
	used := map[string]bool{}
	var checked int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || !isStatusPatch(call) {
					return true
				}
				checked++
				if len(call.Args) >= 3 && isLocked(call.Args[2]) {
					return true
				}
				key := filepath.ToSlash(rel) + " " + funcName(fn)
				if _, ok := exceptions[key]; ok {
					used[key] = true
					return true
				}
				t.Errorf("%s: a status patch without the optimistic lock in %s: use client.MergeFromWithOptions(orig, "+
					"client.MergeFromWithOptimisticLock{}) and redo the work on a conflict, or add an exception here with the "+
					"reason (see internal/controller/doc.go)", fset.Position(call.Pos()), funcName(fn))
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("found only %d status patches under internal/controller: the scan is broken", checked)
	}
	for key := range exceptions {
		if !used[key] {
			t.Errorf("exception %q matches no status patch any more: remove it", key)
		}
	}
}

// isStatusPatch tells whether call is X.Status().Patch(...) or X.SubResource("status").Patch(...).
func isStatusPatch(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Patch" {
		return false
	}
	inner, ok := sel.X.(*ast.CallExpr)
	if !ok {
		return false
	}
	isel, ok := inner.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	switch isel.Sel.Name {
	case "Status":
		return true
	case "SubResource":
		lit, ok := oneArg(inner).(*ast.BasicLit)
		return ok && lit.Value == `"status"`
	}
	return false
}

func oneArg(call *ast.CallExpr) ast.Expr {
	if len(call.Args) != 1 {
		return nil
	}
	return call.Args[0]
}

// isLocked tells whether e is client.MergeFromWithOptions(..., client.MergeFromWithOptimisticLock{}, ...).
func isLocked(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || selName(call.Fun) != "client.MergeFromWithOptions" {
		return false
	}
	for _, a := range call.Args[1:] {
		if lit, ok := a.(*ast.CompositeLit); ok && selName(lit.Type) == "client.MergeFromWithOptimisticLock" {
			return true
		}
	}
	return false
}

func selName(e ast.Expr) string {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return ""
	}
	x, ok := sel.X.(*ast.Ident)
	if !ok {
		return ""
	}
	return x.Name + "." + sel.Sel.Name
}

// funcName is "Recv.Name" for a method, "Name" for a function.
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	if star, ok := t.(*ast.StarExpr); ok {
		t = star.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fn.Name.Name
	}
	return fn.Name.Name
}
