package controller_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A memory size that is not a quantity gets one clear error, not the size rules' CEL errors
// besides; sizes given as numbers of bytes are checked like strings.
func TestMemorySizeErrorsAreClear(t *testing.T) {
	ns := newNamespace(t)
	for _, c := range []struct {
		size any
		want []string
		not  []string
	}{
		{"abc", []string{"spec.memory.size"}, []string{"must be at least", "must be at most", "compile", "evaluat"}},
		{"64Mi", []string{"memory.size must be at least 96Mi"}, nil},
		{"300Gi", []string{"memory.size must be at most 256Gi"}, nil},
		{int64(64 << 20), []string{"memory.size must be at least 96Mi"}, nil},
		{"1Gi", nil, nil},
		{int64(1 << 30), nil, nil},
	} {
		vm := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "virtualization.deckhouse.io/v1alpha2", "kind": "VirtualMachine",
			"metadata": map[string]any{"generateName": "mem-", "namespace": ns},
			"spec": map[string]any{
				"cpu": map[string]any{"cores": int64(1)}, "memory": map[string]any{"size": c.size},
				"blockDeviceRefs": []any{map[string]any{"kind": "VirtualDisk", "name": "root"}},
			},
		}}
		err := k8s.Create(ctx, vm)
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("size %v refused: %v", c.size, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("size %v accepted", c.size)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("size %v: %q lacks %q", c.size, err, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(err.Error(), n) {
				t.Errorf("size %v: %q has the confusing %q", c.size, err, n)
			}
		}
	}
}
