package scan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrInput is bad input: a path that does not exist, a directory that is not a git repository.
var ErrInput = errors.New("bad input")

// Scanner scans files, staged changes and git histories, skipping what its ignore file says.
type Scanner struct {
	ignore Ignore
	// Bytes counts the bytes of text scanned.
	Bytes int64
}

// New returns a scanner with the given ignore rules.
func New(ignore Ignore) *Scanner { return &Scanner{ignore: ignore} }

// Ignore is what .keywardignore says: path globs (gitignore-like: a pattern with a / is matched
// against the path from the root, one without against each part; a trailing / names a directory)
// and whole access key ids to allow everywhere.
type Ignore struct {
	globs []string
	keys  map[string]bool
}

// ParseIgnore reads a .keywardignore: one pattern or key id per line; # starts a comment.
func ParseIgnore(r io.Reader) (Ignore, error) {
	ig := Ignore{keys: map[string]bool{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case keyIDRe.MatchString(line) && len(line) == 20:
			ig.keys[line] = true
		default:
			if _, err := path.Match(strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"), ""); err != nil {
				return ig, fmt.Errorf(".keywardignore line %d: %q is not a valid pattern: %w", n, line, ErrInput)
			}
			ig.globs = append(ig.globs, line)
		}
	}
	return ig, sc.Err()
}

// LoadIgnore reads dir/.keywardignore, if there is one.
func LoadIgnore(dir string) (Ignore, error) {
	f, err := os.Open(filepath.Join(dir, ".keywardignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return Ignore{}, nil
	} else if err != nil {
		return Ignore{}, err
	}
	defer f.Close()
	return ParseIgnore(f)
}

// skips says whether a path (slash-separated, relative to the root) is ignored.
func (ig Ignore) skips(rel string) bool {
	parts := strings.Split(rel, "/")
	for _, g := range ig.globs {
		dir := strings.HasSuffix(g, "/")
		g = strings.TrimSuffix(g, "/")
		if strings.Contains(strings.TrimPrefix(g, "/"), "/") || strings.HasPrefix(g, "/") {
			g = strings.TrimPrefix(g, "/")
			for i := range parts { // the pattern, or a directory above the path
				if ok, _ := path.Match(g, strings.Join(parts[:i+1], "/")); ok && (!dir || i < len(parts)-1) {
					return true
				}
			}
			continue
		}
		for i, p := range parts {
			if ok, _ := path.Match(g, p); ok && (!dir || i < len(parts)-1) {
				return true
			}
		}
	}
	return false
}

func (ig Ignore) allowsKey(id string) bool { return ig.keys[id] }

// scanText scans one text and names its findings.
func (s *Scanner) scanText(name, commit string, data []byte, out *[]Finding) {
	s.Bytes += int64(len(data))
	content(data, s.ignore.allowsKey, func(f Finding) {
		f.File, f.Commit = name, commit
		*out = append(*out, f)
	})
}

// Paths scans files and directories (recursively; .git directories skipped). Names in findings
// are as given, joined with the path below them.
func (s *Scanner) Paths(roots []string) ([]Finding, error) {
	var out []Finding
	for _, root := range roots {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", root, ErrInput)
		}
		if !info.IsDir() {
			data, err := os.ReadFile(root)
			if err != nil {
				return nil, err
			}
			s.scanText(root, "", data, &out)
			continue
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if d.Name() == ".git" || (rel != "." && s.ignore.skips(rel+"/x")) {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() || s.ignore.skips(rel) {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s.scanText(p, "", data, &out)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sortFindings(out)
	return out, nil
}

// git runs git in a repository and returns its output.
func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// repoRoot checks that dir is in a git repository and returns its top directory.
func repoRoot(dir string) (string, error) {
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("%s: %w", dir, ErrInput)
	}
	out, err := git(dir, "rev-parse", "--show-toplevel")
	if err != nil {
		return "", fmt.Errorf("%s is not in a git repository: %w", dir, ErrInput)
	}
	return strings.TrimSpace(string(out)), nil
}

// Staged scans the lines a commit in the repository at dir would add (git diff --cached).
func (s *Scanner) Staged(dir string) ([]Finding, error) {
	if _, err := repoRoot(dir); err != nil {
		return nil, err
	}
	diff, err := git(dir, "diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--diff-filter=ACMR", "--src-prefix=a/", "--dst-prefix=b/")
	if err != nil {
		return nil, err
	}
	var out []Finding
	forAddedLines(diff, func(file string, text []byte, lineNumbers []int) {
		if s.ignore.skips(file) {
			return
		}
		var found []Finding
		s.scanText(file, "", text, &found)
		for _, f := range found {
			f.Line = lineNumbers[f.Line-1]
			out = append(out, f)
		}
	})
	sortFindings(out)
	return out, nil
}

// forAddedLines calls fn once per file of a unified diff with its added lines (joined) and the line
// number each has in the new file.
func forAddedLines(diff []byte, fn func(file string, text []byte, lineNumbers []int)) {
	var file string
	var text []byte
	var numbers []int
	next := 0
	flush := func() {
		if file != "" && len(numbers) > 0 {
			fn(file, text, numbers)
		}
		text, numbers = nil, nil
	}
	for _, line := range bytes.Split(diff, []byte("\n")) {
		switch {
		case bytes.HasPrefix(line, []byte("+++ ")):
			flush()
			file = strings.TrimPrefix(string(line[4:]), "b/")
			if file == "/dev/null" {
				file = ""
			}
		case bytes.HasPrefix(line, []byte("@@")):
			// @@ -a,b +c,d @@
			fields := strings.Fields(string(line))
			if len(fields) >= 3 {
				start, _, _ := strings.Cut(strings.TrimPrefix(fields[2], "+"), ",")
				next, _ = strconv.Atoi(start)
			}
		case bytes.HasPrefix(line, []byte("+")) && file != "":
			text = append(append(text, line[1:]...), '\n')
			numbers = append(numbers, next)
			next++
		}
	}
	flush()
}

// History scans every blob ever committed in the repository at dir (all refs), each once, naming the
// first commit (oldest first) and path that held it.
func (s *Scanner) History(dir string) ([]Finding, error) {
	if _, err := repoRoot(dir); err != nil {
		return nil, err
	}
	log, err := git(dir, "log", "--all", "--reverse", "--raw", "--no-abbrev", "--no-renames", "--format=%x00%H", "--diff-filter=AM")
	if err != nil {
		return nil, err
	}
	type origin struct{ commit, path string }
	first := map[string]origin{}
	var order []string
	commit := ""
	for _, line := range bytes.Split(log, []byte("\n")) {
		switch {
		case len(line) > 0 && line[0] == 0:
			commit = string(line[1:])
		case len(line) > 0 && line[0] == ':':
			// :100644 100644 <old> <new> M\tpath
			meta, p, ok := bytes.Cut(line, []byte("\t"))
			fields := bytes.Fields(meta)
			if !ok || len(fields) < 5 || bytes.Equal(fields[1], []byte("160000")) {
				continue
			}
			blob := string(fields[3])
			if _, seen := first[blob]; !seen && !s.ignore.skips(string(p)) {
				first[blob] = origin{commit, string(p)}
				order = append(order, blob)
			}
		}
	}
	// Every blob reachable from a ref, each once: some never show in a commit's diff (a merge's own
	// resolution); they are scanned too, under the path they have in a tree.
	objects, err := git(dir, "rev-list", "--objects", "--all", "--filter=object:type=blob")
	if err != nil {
		return nil, err
	}
	for _, line := range bytes.Split(objects, []byte("\n")) {
		blob, p, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue // a commit
		}
		if _, seen := first[string(blob)]; !seen && !s.ignore.skips(string(p)) {
			first[string(blob)] = origin{"", string(p)}
			order = append(order, string(blob))
		}
	}
	var out []Finding
	err = catBlobs(dir, order, func(blob string, data []byte) {
		o := first[blob]
		s.scanText(o.path, o.commit, data, &out)
	})
	if err != nil {
		return nil, err
	}
	sortFindings(out)
	return out, nil
}

// catBlobs reads blobs through one git cat-file --batch.
func catBlobs(dir string, blobs []string, fn func(blob string, data []byte)) error {
	cmd := exec.Command("git", "-C", dir, "cat-file", "--batch")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		w := bufio.NewWriter(in)
		for _, b := range blobs {
			_, _ = w.WriteString(b + "\n")
		}
		_ = w.Flush()
		_ = in.Close()
	}()
	r := bufio.NewReaderSize(outPipe, 1<<20)
	var readErr error
	for _, b := range blobs {
		header, err := r.ReadString('\n')
		if err != nil {
			readErr = err
			break
		}
		fields := strings.Fields(header)
		if len(fields) != 3 {
			continue // missing
		}
		size, _ := strconv.Atoi(fields[2])
		data := make([]byte, size+1)
		if _, err := io.ReadFull(r, data); err != nil {
			readErr = err
			break
		}
		if fields[1] == "blob" {
			fn(b, data[:size])
		}
	}
	waitErr := cmd.Wait()
	if readErr != nil {
		return fmt.Errorf("git cat-file: %w", readErr)
	}
	return waitErr
}

// sortFindings orders findings by file, line and rule.
func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if c := strings.Compare(a.File, b.File); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Rule, b.Rule)
	})
}
