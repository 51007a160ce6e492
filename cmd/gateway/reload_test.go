package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Issue 8 (hot reload): the config file watch reloads after a write in
// place, a file renamed over the path, a swap of the symlink the path goes
// through (a Kubernetes ConfigMap), and a removal followed by a new file;
// each reload reads the file as the change left it.
func TestWatchConfig(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	data := func(name, content string) string {
		t.Helper()
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "gateway.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return d
	}
	swap := func(target string) {
		t.Helper()
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(target), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap(data("..v1", "v1"))
	path := filepath.Join(dir, "gateway.yaml")
	if err := os.Symlink(filepath.Join("..data", "gateway.yaml"), path); err != nil {
		t.Fatal(err)
	}

	seen := make(chan string, 64)
	log := zerolog.New(zerolog.NewTestWriter(t))
	stop := watchConfig(ctx, path, &log, func() {
		b, _ := os.ReadFile(path)
		seen <- string(b)
	})
	defer stop()
	expect := func(want string) {
		t.Helper()
		for {
			select {
			case got := <-seen:
				if got == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no reload that read %q", want)
			}
		}
	}

	swap(data("..v2", "v2")) // the symlink swap
	expect("v2")
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}

	// The path itself replaced: a plain file renamed over the symlink.
	tmp := filepath.Join(dir, "new.yaml")
	if err := os.WriteFile(tmp, []byte("v3"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	expect("v3")

	// Written in place, in a burst: one reload at least, reading the end.
	for _, s := range []string{"v4a", "v4b", "v4"} {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	expect("v4")

	// Removed, then back: the watch is set up again and reloads.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("v5"), 0o600); err != nil {
		t.Fatal(err)
	}
	expect("v5")
}

// Regression test for issue 8 (hot reload): when the config path is a
// symlink to a file in another directory (/etc/credgate/gateway.yaml ->
// /srv/deploy/gateway.yaml), an edit of that file reloads, and after the
// symlink is pointed elsewhere the watch follows the new target. Found
// trying the built gateway: koanf watches the path's directory only, so
// editing the target in place changed nothing.
func TestWatchConfigSymlinkTarget(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v1 := filepath.Join(dir, "deploy", "v1.yaml")
	v2 := filepath.Join(dir, "deploy2", "v2.yaml")
	write(v1, "a")
	path := filepath.Join(dir, "etc", "gateway.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(v1, path); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 64)
	log := zerolog.New(zerolog.NewTestWriter(t))
	stop := watchConfig(ctx, path, &log, func() {
		b, _ := os.ReadFile(path)
		seen <- string(b)
	})
	defer stop()
	expect := func(want string) {
		t.Helper()
		for {
			select {
			case got := <-seen:
				if got == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no reload that read %q", want)
			}
		}
	}

	write(v1, "b") // the target edited in place
	expect("b")

	// The symlink pointed at a file in a third directory, then that file
	// edited: the watch followed.
	write(v2, "c")
	tmp := path + ".tmp"
	if err := os.Symlink(v2, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	expect("c")
	write(v2, "d")
	expect("d")
}
