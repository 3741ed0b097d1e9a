/* The floor for scripts/bench/mpi.lua: an 8-byte MPI ping-pong between
 * ranks 0 and 1 (`mpiexec -n 2 pingpong N`), the round trip in µs. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, n = argc > 1 ? atoi(argv[1]) : 100000;
  char b[8] = {0};
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int round = 0; round < 2; round++) {  /* the first is the warm-up */
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < n; i++) {
      if (rank == 0) {
        MPI_Send(b, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
        MPI_Recv(b, 8, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else if (rank == 1) {
        MPI_Recv(b, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(b, 8, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
      }
    }
    if (rank == 0 && round == 1) printf("pingpong_us %f\n", (MPI_Wtime() - t0) / n * 1e6);
  }
  MPI_Finalize();
  return 0;
}
