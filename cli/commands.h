/* commands.h: the subcommands of `switchyard`. Each takes the arguments after its name
 * (argv[0] is the subcommand) and returns the process exit code. */
#ifndef SY_COMMANDS_H
#define SY_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_refcheck(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_up(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
/* Makes DIR with a coordinator, `workers` worker and an operator key pair (keygen --cluster). */
int sy_keygen_cluster(const char *dir, int workers);

#endif
