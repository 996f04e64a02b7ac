package io.millrace.bench.flink;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.table.api.TableResult;

/**
 * Runs one Flink SQL script in a local MiniCluster (Flink picks it when a job is executed from
 * a plain main with flink-clients on the class path), the way a user tries Flink SQL locally.
 *
 * <p>Usage: BenchFlinkSql SCRIPT.sql PARALLELISM. ${name} placeholders in the script are
 * replaced from system properties (-Dbench.name=value).
 */
public final class BenchFlinkSql {
  private BenchFlinkSql() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 2) {
      System.err.println("usage: BenchFlinkSql SCRIPT.sql PARALLELISM");
      System.exit(2);
    }
    String script = Files.readString(Path.of(args[0]));
    for (String name : System.getProperties().stringPropertyNames()) {
      if (name.startsWith("bench.")) {
        script = script.replace("${" + name.substring(6) + "}", System.getProperty(name));
      }
    }
    Configuration conf = new Configuration();
    conf.setString("parallelism.default", args[1]);
    conf.setString("table.local-time-zone", "UTC");
    conf.setString("execution.checkpointing.interval", "10 s");
    conf.setString("pipeline.object-reuse", "true");
    TableEnvironment tables =
        TableEnvironment.create(
            EnvironmentSettings.newInstance().inStreamingMode().withConfiguration(conf).build());
    TableResult last = null;
    for (String statement : statements(script)) {
      last = tables.executeSql(statement);
    }
    if (last != null) {
      last.await();
    }
  }

  /** Splits on ';' at line ends, skipping '--' comment lines. */
  static List<String> statements(String script) {
    List<String> out = new ArrayList<>();
    StringBuilder current = new StringBuilder();
    for (String line : script.split("\n")) {
      if (line.strip().startsWith("--")) {
        continue;
      }
      current.append(line).append('\n');
      if (line.strip().endsWith(";")) {
        String s = current.toString().strip();
        out.add(s.substring(0, s.length() - 1));
        current.setLength(0);
      }
    }
    if (!current.toString().isBlank()) {
      out.add(current.toString().strip());
    }
    return out;
  }
}
