package sim_test

import (
	"fmt"
	"math/rand"

	"golang.org/x/sys/unix"

	"github.com/ringpipe/ringpipe/ring"
	"github.com/ringpipe/ringpipe/ring/sim"
)

// A crash test in miniature: write, sync some of it, cut the power, and look
// at what a restarted process finds.
func Example() {
	disk := sim.NewDisk(7)
	_ = disk.MkdirAll("/db")

	r := disk.NewRing(ring.Options{})
	s := ring.NewSync(r)
	fd, _ := ring.Open(s, "/db/log", unix.O_RDWR|unix.O_CREAT, 0o644)
	_ = ring.SyncDir(s, "/db")                     // the name is durable
	_ = ring.WriteSync(s, fd, []byte("acked;"), 0) // durable
	disk.Inject(sim.Fault{Kind: sim.EIO, At: disk.OpCount() + 1})
	err := ring.WriteAt(s, fd, []byte("failed;"), 6) // hit by the fault
	fmt.Println("write:", err)

	disk.PowerLoss(rand.New(rand.NewSource(1)))
	_ = r.Close()

	r2 := disk.NewRing(ring.Options{}) // the restarted process
	defer r2.Close()
	data, _ := ring.ReadFile(ring.NewSync(r2), "/db/log")
	fmt.Printf("after power loss: %q\n", data)
	// Output:
	// write: write fd 3: input/output error
	// after power loss: "acked;"
}
