// Tiny Kafka admin used by scripts/stack: waits for the broker's metadata and
// creates topics, so the stack needs no kafka-tools (which drags in Connect).
//
//   java -cp '<libs>/*' StackAdmin.java ready  <bootstrap> <timeout-seconds>
//   java -cp '<libs>/*' StackAdmin.java create <bootstrap> <topic>:<partitions> ...
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.errors.TopicExistsException;

public class StackAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: StackAdmin ready|create <bootstrap> ...");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");
        try (Admin admin = Admin.create(props)) {
            switch (args[0]) {
                case "ready" -> ready(admin, args.length > 2 ? Integer.parseInt(args[2]) : 60);
                case "create" -> create(admin, Arrays.copyOfRange(args, 2, args.length));
                default -> { System.err.println("unknown command " + args[0]); System.exit(2); }
            }
        }
    }

    static void ready(Admin admin, int timeoutSeconds) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try {
                DescribeClusterResult cluster = admin.describeCluster();
                int nodes = cluster.nodes().get(5, TimeUnit.SECONDS).size();
                String id = cluster.clusterId().get(5, TimeUnit.SECONDS);
                if (nodes > 0) {
                    System.out.println("cluster " + id + ", " + nodes + " broker(s)");
                    return;
                }
            } catch (Exception e) {
                last = e;
            }
            Thread.sleep(500);
        }
        System.err.println("no metadata from the broker within " + timeoutSeconds + " s: " + last);
        System.exit(1);
    }

    static void create(Admin admin, String[] specs) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (String spec : specs) {
            String[] parts = spec.split(":");
            topics.add(new NewTopic(parts[0], Integer.parseInt(parts[1]), (short) 1));
        }
        CreateTopicsResult result = admin.createTopics(topics);
        for (NewTopic topic : topics) {
            try {
                result.values().get(topic.name()).get(30, TimeUnit.SECONDS);
                System.out.println("created topic " + topic.name() + " (" + topic.numPartitions() + " partitions)");
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
        }
    }
}
