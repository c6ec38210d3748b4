package ringpipe_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/ringpipe/ringpipe"
)

// A round trip: start an engine on a directory, create a space, write a
// record, read it back and stop.
func Example() {
	dir, err := os.MkdirTemp("", "ringpipe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	// BackendAuto (the default) uses io_uring, or plain system calls
	// when the kernel refuses it.
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir, Backend: ringpipe.BackendAuto})
	if err != nil {
		log.Fatal(err)
	}
	// A space of one dimension with 16 bits: points 0..65535.
	sensors, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "sensors", Dims: 1, Bits: 16})
	if err != nil {
		log.Fatal(err)
	}
	// Put returns once the record is durable.
	if _, err := e.Put(ctx, sensors, ringpipe.Point{42}, []byte("21.5 C")); err != nil {
		log.Fatal(err)
	}
	rec, err := e.Get(ctx, sensors, ringpipe.Point{42})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%v: %s\n", rec.Point, rec.Value)
	if err := e.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: [42]: 21.5 C
}

// Scan reads every live record inside a box, bounds included, in the
// space's key order.
func ExampleEngine_Scan() {
	dir, err := os.MkdirTemp("", "ringpipe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}

	grid, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "grid", Dims: 2, Bits: 8})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range []struct {
		x, y uint32
		name string
	}{{1, 1, "well"}, {2, 3, "mill"}, {3, 2, "barn"}, {5, 5, "tower"}} {
		if _, err := e.Put(ctx, grid, ringpipe.Point{c.x, c.y}, []byte(c.name)); err != nil {
			log.Fatal(err)
		}
	}

	// Everything with 1 <= x <= 3 and 1 <= y <= 3.
	box := ringpipe.Box{Min: ringpipe.Point{1, 1}, Max: ringpipe.Point{3, 3}}
	err = e.Scan(ctx, grid, box, func(r ringpipe.Record) bool {
		fmt.Printf("%v %s\n", r.Point, r.Value)
		return true // false would end the scan here
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := e.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Unordered output:
	// [1 1] well
	// [2 3] mill
	// [3 2] barn
}

// PutAsync queues a write without waiting for the disk; its Ticket says
// when the write is durable. Queueing many writes before waiting lets the
// engine commit them together.
func ExampleEngine_PutAsync() {
	dir, err := os.MkdirTemp("", "ringpipe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}

	events, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "events", Dims: 1, Bits: 32})
	if err != nil {
		log.Fatal(err)
	}
	var tickets []*ringpipe.Ticket
	for i := range 100 {
		tk, err := e.PutAsync(ctx, events, ringpipe.Point{uint32(i)}, fmt.Appendf(nil, "event %d", i))
		if err != nil {
			log.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	for _, tk := range tickets {
		if _, err := tk.Wait(ctx); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(len(tickets), "writes durable")

	// A write whose ticket is done is visible.
	rec, err := e.Get(ctx, events, ringpipe.Point{99})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", rec.Value)
	if err := e.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 100 writes durable
	// event 99
}

// A View is a snapshot: later writes do not change it, so several reads
// of it agree with each other.
func ExampleEngine_View() {
	dir, err := os.MkdirTemp("", "ringpipe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	e, err := ringpipe.Start(ctx, ringpipe.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}

	accounts, err := e.CreateSpace(ctx, ringpipe.SpaceSpec{Name: "accounts", Dims: 1, Bits: 32})
	if err != nil {
		log.Fatal(err)
	}
	alice := ringpipe.Point{1}
	if _, err := e.Put(ctx, accounts, alice, []byte("100")); err != nil {
		log.Fatal(err)
	}

	v := e.View()
	if _, err := e.Put(ctx, accounts, alice, []byte("80")); err != nil {
		log.Fatal(err)
	}

	then, err := v.Get(accounts, alice)
	if err != nil {
		log.Fatal(err)
	}
	now, err := e.Get(ctx, accounts, alice)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("view: %s, now: %s\n", then.Value, now.Value)
	if err := e.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	// A View stays readable after Stop.
	then, err = v.Get(accounts, alice)
	fmt.Printf("after Stop: %s %v\n", then.Value, err)
	// Output:
	// view: 100, now: 80
	// after Stop: 100 <nil>
}
