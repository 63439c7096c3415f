package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

// listing is what a list command knows of its kind of object; listCmd does
// the rest as every list command does it: -o json|wide, -n/-A for
// namespaced kinds, sorted by namespace and name, a NAMESPACE column with
// -A, a note on stderr for an empty namespace.
type listing[T any] struct {
	// plural names the kind in "No <plural> in namespace x."
	plural string
	// namespaced kinds get -n and -A; list gets "" for every namespace.
	namespaced bool
	list       func(ctx context.Context, cl *api.Client, ns string) ([]T, error)
	id         func(*T) (namespace, name string)
	// headers are the columns, wide those -o wide adds; row and wideRow
	// fill them.
	headers, wide []string
	row, wideRow  func(*T) []string
}

// listCmd makes cmd list l's objects, with the flags that takes; callers
// may add flags of their own to the command it returns.
func listCmd[T any](c *cli, cmd *cobra.Command, l listing[T]) *cobra.Command {
	var nsf namespaceFlags
	var output string
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		all := !l.namespaced || nsf.all
		ns := "" // every namespace
		if !all {
			ns = nsf.namespace
		}
		items, err := l.list(ctx, cl, ns)
		if err != nil {
			return err
		}
		slices.SortFunc(items, func(a, b T) int {
			ans, an := l.id(&a)
			bns, bn := l.id(&b)
			return cmp.Or(cmp.Compare(ans, bns), cmp.Compare(an, bn))
		})
		if output == outputJSON {
			return writeJSON(c.stdout, items)
		}
		if len(items) == 0 && !all {
			fmt.Fprintf(c.stderr, "No %s in namespace %s.\n", l.plural, nsf.namespace)
			return nil
		}
		withNS := l.namespaced && nsf.all
		var headers []string
		if withNS {
			headers = append(headers, "NAMESPACE")
		}
		headers = append(headers, l.headers...)
		if output == outputWide {
			headers = append(headers, l.wide...)
		}
		t := newTable(c.stdout, headers...)
		for i := range items {
			var row []string
			if withNS {
				ns, _ := l.id(&items[i])
				row = append(row, ns)
			}
			row = append(row, l.row(&items[i])...)
			if output == outputWide {
				row = append(row, l.wideRow(&items[i])...)
			}
			t.row(row...)
		}
		return t.flush()
	}
	if l.namespaced {
		nsf.add(cmd)
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or wide")
	return cmd
}
