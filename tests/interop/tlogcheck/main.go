// Command tlogcheck is an independent verifier for the registry's transparency log, built only
// on Go's reference implementations golang.org/x/mod/sumdb/note (C2SP signed notes) and
// golang.org/x/mod/sumdb/tlog (RFC 6962 tree hashes and proofs). It shares no code with the
// Python implementation it checks.
//
// Input (stdin): one JSON object
//
//	{"vkey": "<name>+<hex key id>+<base64(0x01 || ed25519 public key)>",
//	 "note": "<signed note text>",
//	 "leaves": ["<standard base64 of each leaf's bytes>", ...],
//	 "inclusion": [{"index": i, "size": n, "leaf_hash": "<hex>", "path": ["<hex>", ...], "root": "<hex>"}],
//	 "consistency": [{"first": a, "second": b, "path": ["<hex>", ...]}]}
//
// Output (stdout): one JSON line. On success, exit status 0 and
//
//	{"ok": true, "origin": ..., "size": ..., "root": "<hex>", "inclusion_checked": k, "consistency_checked": m}
//
// On the first failure, exit status 1 and {"ok": false, "error": "<stage>: <reason>"} where
// stage is one of input, note, checkpoint, tree, inclusion[i], consistency[i].
//
// Proof order. Our log emits RFC 6962 §2.1.1 audit paths and §2.1.2 consistency proofs in the
// RFC's order: PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) (or the mirror image), i.e. the
// sibling nearest the leaf first and the sibling nearest the root last; likewise
// SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n]). x/mod's tlog builds its
// RecordProof in leafProof() as `append(p, th)` after recursing into the half that holds the
// leaf, and its TreeProof in treeProof() as `append(p, th)` after recursing likewise;
// runRecordProof/runTreeProof consume p[len(p)-1] at the top level. That is exactly the RFC's
// order (leaf-to-root), so the paths are passed to tlog.CheckRecord / tlog.CheckTree unchanged,
// with no reversal or other conversion. (Checked against x/mod v0.7.0, Debian
// golang-golang-x-mod-dev 0.7.0-1.)
//
// Empty tree. RFC 6962 §2.1 defines MTH({}) = SHA-256(""), but tlog.TreeHash(0, r) returns the
// all-zero Hash (x/mod's documented convention for go.sum's tree). Only a checkpoint can name
// size 0 (neither proof kind accepts it), and for it this tool requires the RFC 6962 value, since
// C2SP tlog-checkpoint roots are RFC 6962 roots; every non-empty size uses tlog.TreeHash as is.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusionItem struct {
	Index    int64    `json:"index"`
	Size     int64    `json:"size"`
	LeafHash string   `json:"leaf_hash"`
	Path     []string `json:"path"`
	Root     string   `json:"root"`
}

type consistencyItem struct {
	First  int64    `json:"first"`
	Second int64    `json:"second"`
	Path   []string `json:"path"`
}

type input struct {
	VKey        string            `json:"vkey"`
	Note        string            `json:"note"`
	Leaves      []string          `json:"leaves"`
	Inclusion   []inclusionItem   `json:"inclusion"`
	Consistency []consistencyItem `json:"consistency"`
}

type result struct {
	OK                 bool   `json:"ok"`
	Error              string `json:"error,omitempty"`
	Origin             string `json:"origin,omitempty"`
	Size               *int64 `json:"size,omitempty"`
	Root               string `json:"root,omitempty"`
	InclusionChecked   *int   `json:"inclusion_checked,omitempty"`
	ConsistencyChecked *int   `json:"consistency_checked,omitempty"`
}

// memHashes is an in-memory tlog.HashReader over the stored hashes of every leaf appended so far.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m)) {
			return nil, fmt.Errorf("stored hash index %d out of range (have %d)", x, len(m))
		}
		out[i] = m[x]
	}
	return out, nil
}

// tree recomputes every stored hash from the raw leaves with tlog.StoredHashes.
type tree struct {
	leaves [][]byte
	stored memHashes
}

func buildTree(leaves [][]byte) (*tree, error) {
	t := &tree{leaves: leaves}
	for i, leaf := range leaves {
		n := int64(i)
		if want := tlog.StoredHashIndex(0, n); want != int64(len(t.stored)) {
			return nil, fmt.Errorf("stored hash index of leaf %d is %d, have %d hashes", i, want, len(t.stored))
		}
		hashes, err := tlog.StoredHashes(n, leaf, t.stored)
		if err != nil {
			return nil, fmt.Errorf("StoredHashes(%d): %v", i, err)
		}
		t.stored = append(t.stored, hashes...)
	}
	if want := tlog.StoredHashCount(int64(len(leaves))); want != int64(len(t.stored)) {
		return nil, fmt.Errorf("StoredHashCount(%d) = %d, have %d hashes", len(leaves), want, len(t.stored))
	}
	return t, nil
}

// root is MTH of the first n leaves: tlog.TreeHash for n >= 1, RFC 6962's SHA-256("") for n = 0.
func (t *tree) root(n int64) (tlog.Hash, error) {
	if n < 0 || n > int64(len(t.leaves)) {
		return tlog.Hash{}, fmt.Errorf("tree size %d is outside 0..%d (the leaves given)", n, len(t.leaves))
	}
	if n == 0 {
		return tlog.Hash(sha256.Sum256(nil)), nil
	}
	return tlog.TreeHash(n, t.stored)
}

func parseHexHash(s string) (tlog.Hash, error) {
	raw, err := hex.DecodeString(s)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("%q is not hex: %v", s, err)
	}
	if len(raw) != tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("%q is %d bytes, want %d", s, len(raw), tlog.HashSize)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h, nil
}

func parseHexPath(path []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(path))
	for i, s := range path {
		h, err := parseHexHash(s)
		if err != nil {
			return nil, fmt.Errorf("path[%d]: %v", i, err)
		}
		out[i] = h
	}
	return out, nil
}

func hexOf(h tlog.Hash) string { return hex.EncodeToString(h[:]) }

// parseCheckpoint parses a C2SP tlog-checkpoint body: origin, decimal size (no leading zeros),
// standard base64 of the 32-byte root, each newline-terminated, then optional extension lines.
func parseCheckpoint(text string) (origin string, size int64, root tlog.Hash, err error) {
	if !strings.HasSuffix(text, "\n") {
		return "", 0, root, fmt.Errorf("body does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return "", 0, root, fmt.Errorf("want at least 3 lines (origin, size, root), got %d", len(lines))
	}
	origin = lines[0]
	if origin == "" {
		return "", 0, root, fmt.Errorf("empty origin line")
	}
	s := lines[1]
	if s == "" || strings.Trim(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return "", 0, root, fmt.Errorf("size line %q is not a canonical decimal number", s)
	}
	size, err = strconv.ParseInt(s, 10, 64)
	if err != nil {
		return "", 0, root, fmt.Errorf("size line %q: %v", s, err)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil {
		return "", 0, root, fmt.Errorf("root line %q is not standard base64: %v", lines[2], err)
	}
	if len(raw) != tlog.HashSize {
		return "", 0, root, fmt.Errorf("root is %d bytes, want %d", len(raw), tlog.HashSize)
	}
	copy(root[:], raw)
	return origin, size, root, nil
}

func run(r io.Reader) (result, error) {
	var in input
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return result{}, fmt.Errorf("input: %v", err)
	}

	// (a) The signed note and its tlog-checkpoint body.
	verifier, err := note.NewVerifier(in.VKey)
	if err != nil {
		return result{}, fmt.Errorf("note: bad verifier key %q: %v", in.VKey, err)
	}
	opened, err := note.Open([]byte(in.Note), note.VerifierList(verifier))
	if err != nil {
		return result{}, fmt.Errorf("note: %v", err)
	}
	if len(opened.Sigs) == 0 {
		return result{}, fmt.Errorf("note: no verified signature")
	}
	origin, size, cpRoot, err := parseCheckpoint(opened.Text)
	if err != nil {
		return result{}, fmt.Errorf("checkpoint: %v", err)
	}

	// (b) The tree, recomputed from the raw leaves.
	leaves := make([][]byte, len(in.Leaves))
	for i, s := range in.Leaves {
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return result{}, fmt.Errorf("input: leaves[%d] is not standard base64: %v", i, err)
		}
		leaves[i] = b
	}
	t, err := buildTree(leaves)
	if err != nil {
		return result{}, fmt.Errorf("tree: %v", err)
	}
	if size > int64(len(leaves)) {
		return result{}, fmt.Errorf("checkpoint: size %d exceeds the %d leaves given", size, len(leaves))
	}
	want, err := t.root(size)
	if err != nil {
		return result{}, fmt.Errorf("tree: %v", err)
	}
	if want != cpRoot {
		return result{}, fmt.Errorf("checkpoint: root %s for size %d, but the leaves give %s", hexOf(cpRoot), size, hexOf(want))
	}

	// (c) Inclusion proofs (RFC 6962 §2.1.1 audit paths; tlog uses the same order).
	for i, item := range in.Inclusion {
		fail := func(format string, args ...interface{}) error {
			return fmt.Errorf("inclusion[%d] (index %d, size %d): %s", i, item.Index, item.Size, fmt.Sprintf(format, args...))
		}
		if item.Size < 1 || item.Size > int64(len(leaves)) || item.Index < 0 || item.Index >= item.Size {
			return result{}, fail("need 0 <= index < size <= %d", len(leaves))
		}
		leafHash, err := parseHexHash(item.LeafHash)
		if err != nil {
			return result{}, fail("leaf_hash: %v", err)
		}
		if want := tlog.RecordHash(leaves[item.Index]); leafHash != want {
			return result{}, fail("leaf_hash %s, but RecordHash(leaves[%d]) = %s", hexOf(leafHash), item.Index, hexOf(want))
		}
		root, err := parseHexHash(item.Root)
		if err != nil {
			return result{}, fail("root: %v", err)
		}
		want, err := t.root(item.Size)
		if err != nil {
			return result{}, fail("%v", err)
		}
		if root != want {
			return result{}, fail("root %s, but TreeHash(%d) = %s", hexOf(root), item.Size, hexOf(want))
		}
		path, err := parseHexPath(item.Path)
		if err != nil {
			return result{}, fail("%v", err)
		}
		if err := tlog.CheckRecord(tlog.RecordProof(path), item.Size, root, item.Index, leafHash); err != nil {
			return result{}, fail("CheckRecord: %v", err)
		}
	}

	// (d) Consistency proofs (RFC 6962 §2.1.2; tlog uses the same order).
	for i, item := range in.Consistency {
		fail := func(format string, args ...interface{}) error {
			return fmt.Errorf("consistency[%d] (%d -> %d): %s", i, item.First, item.Second, fmt.Sprintf(format, args...))
		}
		if item.First < 1 || item.First > item.Second || item.Second > int64(len(leaves)) {
			return result{}, fail("need 1 <= first <= second <= %d", len(leaves))
		}
		path, err := parseHexPath(item.Path)
		if err != nil {
			return result{}, fail("%v", err)
		}
		firstRoot, err := t.root(item.First)
		if err != nil {
			return result{}, fail("%v", err)
		}
		secondRoot, err := t.root(item.Second)
		if err != nil {
			return result{}, fail("%v", err)
		}
		if err := tlog.CheckTree(tlog.TreeProof(path), item.Second, secondRoot, item.First, firstRoot); err != nil {
			return result{}, fail("CheckTree: %v", err)
		}
	}

	nInc, nCons := len(in.Inclusion), len(in.Consistency)
	return result{
		OK: true, Origin: origin, Size: &size, Root: hexOf(cpRoot),
		InclusionChecked: &nInc, ConsistencyChecked: &nCons,
	}, nil
}

func main() {
	res, err := run(os.Stdin)
	status := 0
	if err != nil {
		res, status = result{OK: false, Error: err.Error()}, 1
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "tlogcheck: encoding the result: %v\n", err)
		os.Exit(2)
	}
	os.Stdout.Write(buf.Bytes())
	os.Exit(status)
}
