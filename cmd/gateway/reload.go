package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/knadh/koanf/providers/file"
	"github.com/rs/zerolog"
)

// Config hot reload triggers (issue 8): the config file is watched, SIGHUP
// reloads it (see onHangup), and so does POST /admin/reload (the gateway's).

// configDebounce is how long the watch waits after a change for the next
// one before it reloads: an editor's save or a Kubernetes ConfigMap update is
// a burst of events (truncate and write, rename, symlink swap, removal of the
// old data), and one reload follows the whole burst, on the file as it ends.
const configDebounce = 200 * time.Millisecond

// rewatchDelay is how long the watch waits before watching again when the
// file is gone (an editor that deletes and recreates it, a volume being
// remounted) or cannot be watched.
const rewatchDelay = time.Second

// watchConfig calls reload when the config file at path changes, until ctx
// ends: a write, a file renamed over it, or a swap of a symlink on its path
// (a Kubernetes ConfigMap volume swaps its ..data symlink). koanf's file
// provider watches the file's directory and follows symlinks. A watch that
// ends (the file was removed) is set up again once the file is back, and a
// reload follows, for what changed meanwhile. The first watch is set up
// before watchConfig returns. The returned function stops the watch and
// waits for it.
func watchConfig(ctx context.Context, path string, log *zerolog.Logger, reload func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	first, err := startWatch(path)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				log.Error().Interface("panic", r).Msg("config file watch panicked; the file is no longer watched (SIGHUP still reloads)")
			}
		}()
		watchLoop(ctx, path, log, reload, first, err)
	}()
	return func() {
		cancel()
		<-done
	}
}

// fileWatch is one koanf watch of the config file.
type fileWatch struct {
	f       *file.File
	changed chan struct{} // a change (coalesced)
	ended   chan error    // the watch ended (the file was removed, an error)
	// target watches the file a symlink on the path resolves to, when it
	// lives in another directory: koanf watches the path's directory only,
	// so an edit of the target would go unseen. nil otherwise.
	target *file.File
	real   string // what path resolved to when the watch started
}

func startWatch(path string) (*fileWatch, error) {
	w := &fileWatch{f: file.Provider(path), changed: make(chan struct{}, 1), ended: make(chan error, 1)}
	cb := func(_ any, err error) {
		if err != nil {
			select {
			case w.ended <- err:
			default:
			}
			return
		}
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	if err := w.f.Watch(cb); err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		_ = w.f.Unwatch()
		return nil, err
	}
	w.real = filepath.Clean(real)
	if filepath.Dir(w.real) != filepath.Dir(filepath.Clean(path)) {
		w.target = file.Provider(w.real)
		if err := w.target.Watch(cb); err != nil {
			_ = w.f.Unwatch()
			return nil, err
		}
	}
	return w, nil
}

// unwatch ends w.
func (w *fileWatch) unwatch() {
	_ = w.f.Unwatch()
	if w.target != nil {
		_ = w.target.Unwatch()
	}
}

// moved reports whether path no longer resolves to the file w watches
// (a symlink on it was swapped), so the watch must follow.
func (w *fileWatch) moved(path string) bool {
	real, err := filepath.EvalSymlinks(path)
	return err == nil && filepath.Clean(real) != w.real
}

// watchLoop runs the watch w (or, when it failed to start with err, sets
// one up again) until ctx ends.
func watchLoop(ctx context.Context, path string, log *zerolog.Logger, reload func(), w *fileWatch, err error) {
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	failing := false // the last attempt to watch failed: later failures log at debug
	for first := true; ; first = false {
		if !first {
			w, err = startWatch(path)
		}
		if err != nil {
			ev := log.Debug()
			if !failing {
				ev = log.Warn()
			}
			failing = true
			ev.Str("path", path).Str("err", err.Error()).Msg("cannot watch the config file; trying again every second (SIGHUP reloads it meanwhile)")
			if !wait(ctx, rewatchDelay) {
				return
			}
			continue
		}
		if !first {
			// Watching again after a gap: the file may have changed.
			log.Info().Str("path", path).Msg("watching the config file again")
			debounce.Reset(configDebounce)
		}
		failing = false
		follow := false // the path's symlink moved: watch its new target at once
	watching:
		for {
			select {
			case <-ctx.Done():
				w.unwatch()
				return
			case <-w.changed:
				debounce.Reset(configDebounce)
			case <-debounce.C:
				reload()
				if w.target != nil && w.moved(path) {
					w.unwatch()
					follow = true
					break watching
				}
			case err := <-w.ended:
				w.unwatch()
				if w.target != nil && w.moved(path) {
					follow = true // the old target was removed after a swap
					break watching
				}
				log.Warn().Str("path", path).Str("err", err.Error()).Msg("the config file watch ended; watching again once the file is back")
				break watching
			}
		}
		if follow {
			continue
		}
		if !wait(ctx, rewatchDelay) {
			return
		}
	}
}

// wait waits d or until ctx ends; false if ctx ended.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
