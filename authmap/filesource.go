package authmap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// maxSecretFile bounds what a file or a command may hand us as a secret.
const maxSecretFile = 1 << 20

// fileGoneSettle is how long a watched file must stay missing before its
// removal is reported: an editor that moves the old file away before it
// writes the new one leaves the path empty for a moment, which is a
// rotation under way, not a removal.
const fileGoneSettle = time.Second

// FileSource reads a value from a file: the whole file trimmed, or a JSON
// object {"token": "...", "expires_at": "RFC 3339"}. It is a [Watcher].
type FileSource struct {
	path string
}

// NewFileSource returns the source of source.file.
func NewFileSource(path string) *FileSource { return &FileSource{path: path} }

// Kind returns "file".
func (s *FileSource) Kind() string { return KindFile }

// Fetch reads the file now.
func (s *FileSource) Fetch(context.Context) (Token, error) {
	data, err := readBounded(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Token{}, fmt.Errorf("file %s does not exist: %w", s.path, ErrMissing)
	}
	if err != nil {
		return Token{}, fmt.Errorf("file %s: %w", s.path, err)
	}
	return parseTokenText(data, "", "file "+s.path)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSecretFile {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretFile)
	}
	return data, nil
}

// Watch calls onChange each time the file's content changes. It watches the
// file's directory, not the file: an editor's atomic rename and a Kubernetes
// secret volume's symlink swap (..data pointing at a new timestamped directory)
// replace the file rather than write it, and a watch on the old inode would go
// quiet. Any event in the directory re-reads the file; a change is a new,
// readable, non-empty content (compared by SHA-256, so the secret is not kept
// here), which also drops the burst of events one rotation makes. A file that
// is briefly missing or empty mid-rotation is not a change. A file removed,
// and still missing fileGoneSettle later, is: onChange lets the credential
// re-read it and report the removal as a SIGHUP's re-read does (and so for
// a file emptied, and still empty then), keeping the
// value it holds; the file's return, even with the same content, is a change
// again. (The watch took a removal for a rotation under way and said nothing,
// while the old value went on being used: found trying the gateway from
// outside.) onChange is also called once when the watch is in place, for a
// change that came before it.
func (s *FileSource) Watch(ctx context.Context, onChange func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch file %s: %w", s.path, err)
	}
	defer w.Close()
	dir := filepath.Dir(s.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch directory %s: %w", dir, err)
	}
	// Whatever changed before the watch was in place (since the value was
	// loaded) is caught by one re-read now; the credential ignores a value it
	// already holds.
	last, _ := s.digest()
	onChange()
	// gone runs from when the file is found missing until its removal is
	// reported (settling), unless it comes back first. It is not pushed back
	// by later events: a busy directory does not postpone the report.
	gone := time.NewTimer(fileGoneSettle)
	gone.Stop()
	defer gone.Stop()
	settling := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
		case _, ok := <-w.Errors:
			// An overflow or a read error: re-read anyway, a change may hide behind it.
			if !ok {
				return nil
			}
		case <-gone.C:
			settling = false
			if _, err := s.digest(); valueGone(err) && last != nil {
				last = nil
				onChange()
			}
			continue
		}
		sum, err := s.digest()
		if valueGone(err) && last != nil && !settling {
			settling = true
			gone.Reset(fileGoneSettle)
		}
		if err != nil || bytes.Equal(sum, last) {
			continue
		}
		last = sum
		onChange()
	}
}

// digest hashes the file's trimmed content; an error when it is unreadable
// (fs.ErrNotExist when missing) or empty.
func (s *FileSource) digest() ([]byte, error) {
	data, err := readBounded(s.path)
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, errEmptyFile
	}
	sum := sha256.Sum256(data)
	return sum[:], nil
}

// valueGone reports whether err, digest's, says the value is gone: the file
// removed or emptied. Either may be a rotation under way, and is reported
// only once it lasts fileGoneSettle.
func valueGone(err error) bool { return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errEmptyFile) }

// errEmptyFile is digest's error for a file with nothing but white space:
// one an in-place write has truncated and not written yet, most often.
var errEmptyFile = errors.New("empty")
